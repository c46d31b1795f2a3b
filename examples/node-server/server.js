// The team's Node.js service, reduced to what envwrap changes for it: it reads
// its secrets from process.env, exactly as it did with dotenv -- no SDK, no code
// for Vault or AWS. Run it as `envwrap -- node server.js`.
//
// It never prints a secret; it prints a short fingerprint so that you can see a
// rotation arrive.
//
// Zero-downtime rotation (envwrap --listen ... --ready ... --on-change handoff):
// - Socket: with `--listen`, envwrap binds the port itself and hands the listening
//   socket to every generation as fd 3 with LISTEN_FDS / LISTEN_PID (systemd's
//   socket-activation protocol). Two generations then accept from one socket, and
//   connections that arrive while neither accepts wait in the kernel's backlog
//   instead of being refused. Without LISTEN_FDS the service binds PORT itself.
// - Readiness: `GET /healthz` answers 200 from a process that accepts requests.
//   With `--listen` a probe of the shared port may be answered by the *old*
//   generation, so it cannot tell envwrap that the new one is ready. Use
//   `--ready notify` (below) or a duration (`--ready 2s`) there; an http/tcp probe
//   fits only when each generation binds its own address.
// - notify: when NOTIFY_SOCKET is set, the service sends READY=1 once it listens.
//   Node's core has no unix datagram socket (dgram is UDP only, net is stream
//   only), and this example stays dependency-free, so the datagram is sent by a
//   perl one-liner (perl-base is in every Debian-based Node image, node:*-slim
//   included), as a child of this process: envwrap accepts READY=1 from the
//   generation's main process or its descendants. Without perl it logs that it
//   cannot notify: use a duration then.
// - Stop: on SIGTERM it stops accepting, lets the requests in flight finish, and
//   exits 0 -- the old generation of a handoff loses nothing it had accepted.
//
// Knobs for the demo and the benchmark:
// - STARTUP_DELAY_MS (default 0): wait this long before listening, as a real
//   service does while it loads and connects to its database.
// - The service refuses to start (exit 1) when DATABASE_URL does not parse as a
//   postgres URL: what happens when a rotation delivers a password the program
//   cannot use. envwrap's rollback then keeps the previous generation serving.
const http = require('http');
const crypto = require('crypto');
const { execFile } = require('child_process');

const fingerprint = (value) =>
  value ? crypto.createHash('sha256').update(value).digest('hex').slice(0, 12) : '(unset)';

const log = (message) => console.log(`[server ${process.pid}] ${message}`);

const config = {
  port: Number(process.env.PORT || 3001),
  host: process.env.HOST || '127.0.0.1',
  nodeEnv: process.env.NODE_ENV || 'development',
  startupDelayMs: Number(process.env.STARTUP_DELAY_MS || 0),
  atUsername: process.env.AT_USERNAME,
  atApiKey: process.env.AT_API_KEY,
  databaseUrl: process.env.DATABASE_URL,
  jwtSecret: process.env.JWT_SECRET,
};

// "Verify: test with new secret" from the program's side: a DATABASE_URL it
// cannot use is fatal at start. The error shows the fingerprint only -- never
// the URL, and never the URL parser's error, whose `input` field holds it.
if (config.databaseUrl !== undefined) {
  let parsed = null;
  try {
    parsed = new URL(config.databaseUrl);
  } catch {
    parsed = null;
  }
  if (!parsed || !['postgres:', 'postgresql:'].includes(parsed.protocol) || !parsed.hostname) {
    console.error(`[server ${process.pid}] DATABASE_URL (fingerprint ${fingerprint(config.databaseUrl)}) ` +
      'is not a usable postgres URL; refusing to start');
    process.exit(1);
  }
}

let ready = false;
let stopping = false;

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
  if (req.url === '/healthz') {
    const healthy = ready && !stopping;
    res.statusCode = healthy ? 200 : 503;
    res.end(JSON.stringify({ pid: process.pid, ready: healthy }) + '\n');
    return;
  }
  res.end(JSON.stringify(status()) + '\n');
});

// systemd's sd_listen_fds(): the descriptors are ours only when LISTEN_PID is
// our own PID (the variables may have been inherited from a parent). Unset them
// afterwards so that a process this service starts does not take them too.
const inheritedSocket = () => {
  const count = Number(process.env.LISTEN_FDS || 0);
  const forUs = Number(process.env.LISTEN_PID) === process.pid;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  return count >= 1 && forUs ? 3 : null;
};

// sd_notify(READY=1) without a dependency: see the comment at the top.
const PERL_NOTIFY =
  'use Socket; my $a = $ENV{NOTIFY_SOCKET}; $a =~ s/^@/\\0/;' +
  ' socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";' +
  ' send($s, $ARGV[0], 0, pack_sockaddr_un($a)) or die "send: $!";' +
  // Stay alive a moment: the receiver attributes the datagram to a generation by
  // the sender's PID (SO_PASSCRED) and its parent chain, which it can only look
  // up while the sender exists -- systemd-notify has the same race.
  ' select(undef, undef, undef, 5);';

const notify = (state) => {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('perl', ['-e', PERL_NOTIFY, `${state}\nMAINPID=${process.pid}`], (error) => {
    if (error) log(`cannot send ${state} to NOTIFY_SOCKET (${error.code || error.message}); use --ready DURATION`);
  });
};

const listen = () => {
  const fd = inheritedSocket();
  const onListening = () => {
    ready = true;
    const where = fd === null ? `${config.host}:${config.port}` : `fd ${fd} from envwrap --listen`;
    log(`ready on ${where} ${JSON.stringify(status())}`);
    notify('READY=1');
  };
  if (fd === null) server.listen(config.port, config.host, onListening);
  else server.listen({ fd }, onListening);
};

setTimeout(listen, config.startupDelayMs);

// envwrap stops a generation with SIGTERM (--kill-signal): in restart mode before
// the next one starts, in handoff mode once the next one is ready.
process.on('SIGTERM', () => {
  stopping = true;
  log('SIGTERM: finishing requests in flight');
  if (!server.listening) process.exit(0);
  // close() stops accepting and, since Node 19, closes idle keep-alive
  // connections; the callback runs once the requests in flight are answered.
  server.close(() => process.exit(0));
  // envwrap SIGKILLs after --kill-timeout anyway; do not hang on a stuck client.
  setTimeout(() => process.exit(0), 8000).unref();
});
