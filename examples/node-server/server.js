// The team's Node.js service, reduced to what envwrap changes for it: it reads
// its secrets from process.env, exactly as it did with dotenv -- no SDK, no code
// for Vault or AWS. Run it as `envwrap -- node server.js`.
//
// It never prints a secret; it prints a short fingerprint so that you can see a
// rotation arrive.
const http = require('http');
const crypto = require('crypto');

const fingerprint = (value) =>
  value ? crypto.createHash('sha256').update(value).digest('hex').slice(0, 12) : '(unset)';

const config = {
  port: Number(process.env.PORT || 3001),
  nodeEnv: process.env.NODE_ENV || 'development',
  atUsername: process.env.AT_USERNAME,
  atApiKey: process.env.AT_API_KEY,
  databaseUrl: process.env.DATABASE_URL,
  jwtSecret: process.env.JWT_SECRET,
};

const status = () => ({
  pid: process.pid,
  nodeEnv: config.nodeEnv,
  atUsername: config.atUsername,
  atApiKey: fingerprint(config.atApiKey),
  databaseUrl: fingerprint(config.databaseUrl),
  jwtSecret: fingerprint(config.jwtSecret),
});

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(status()) + '\n');
});

server.listen(config.port, '127.0.0.1', () => {
  console.log(`server ready on :${config.port} ${JSON.stringify(status())}`);
});

// envwrap --watch stops the old generation with SIGTERM before starting the new one.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
