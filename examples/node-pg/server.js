// A Node.js service on PostgreSQL whose credentials are short-lived: OpenBao's
// database secrets engine creates a PostgreSQL user for each lease, envwrap puts
// it in the environment, and hands the service over to a new generation with
// new credentials before the lease ends. The service knows nothing of Vault: it
// reads its connection from the environment, as with dotenv --
//   DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/DB
// or the libpq variables PGUSER, PGPASSWORD, PGHOST, PGPORT, PGDATABASE (which
// the `pg` driver reads by itself when DATABASE_URL is unset).
//
//   envwrap --env-file vault.env --watch --listen 127.0.0.1:3002 --ready 'log:ready on ' \
//     --on-change handoff --revoke-on-exit -- node server.js
//
// (docs/postgres.md walks through it.) It never prints a secret, nor the user name.
//
// - GET /items: `SELECT ... FROM items` with the current credentials; the answer
//   names the process and the PostgreSQL user that ran the query, so that a
//   rotation can be seen arriving. GET /healthz: 200 while it serves.
// - Start: it checks its credentials with one query before it listens. Credentials
//   that do not work are fatal (exit 1): envwrap's handoff then keeps the previous
//   generation serving and rolls the change back.
// - Socket: with `--listen`, envwrap holds the listening socket and passes it as
//   fd 3 (LISTEN_FDS); both generations accept from it during a handoff, so no
//   connection is refused. Without LISTEN_FDS it binds PORT itself.
// - Ready: it prints `ready on ...` once it listens, which `--ready 'log:ready on '`
//   waits for (examples/node-server/server.js shows `--ready notify` instead).
// - Stop: on SIGTERM it stops accepting, answers the requests in flight, closes
//   its connection pool and exits 0, so that the old credentials can be revoked.
const http = require('http');
const { Pool } = require('pg');

const log = (message) => console.log(`[server ${process.pid}] ${message}`);

const port = Number(process.env.PORT || 3002);
const host = process.env.HOST || '127.0.0.1';

// With no connectionString the driver reads PGUSER, PGPASSWORD, PGHOST... itself.
// Errors from the driver are reported by their code only: some quote the input.
const pool = new Pool({
  connectionString: process.env.DATABASE_URL || undefined,
  max: Number(process.env.PG_POOL_SIZE || 4),
  connectionTimeoutMillis: 5000,
});
pool.on('error', (error) => log(`idle database connection failed (${error.code || 'error'})`));

const ITEMS = `SELECT current_user AS db_user,
  coalesce(json_agg(json_build_object('id', id, 'name', name) ORDER BY id), '[]') AS items
  FROM items`;

let stopping = false;

const send = (res, status, document) => {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ pid: process.pid, ...document }) + '\n');
};

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    send(res, stopping ? 503 : 200, { ready: !stopping });
    return;
  }
  if (req.url !== '/items') {
    send(res, 404, { error: 'try /items' });
    return;
  }
  pool.query(ITEMS).then(
    (result) => send(res, 200, { user: result.rows[0].db_user, items: result.rows[0].items }),
    (error) => {
      log(`query failed (${error.code || 'error'})`);
      send(res, 503, { error: 'database', code: error.code || null });
    });
});

// systemd's sd_listen_fds(): the descriptors are ours only when LISTEN_PID is our PID.
const inheritedSocket = () => {
  const count = Number(process.env.LISTEN_FDS || 0);
  const forUs = Number(process.env.LISTEN_PID) === process.pid;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  return count >= 1 && forUs ? 3 : null;
};

const start = async () => {
  try {
    await pool.query('SELECT 1 FROM items LIMIT 1');
  } catch (error) {
    console.error(`[server ${process.pid}] cannot query the database (${error.code || 'error'}); ` +
      'refusing to start');
    process.exit(1);
  }
  const fd = inheritedSocket();
  const where = fd === null ? `${host}:${port}` : `fd ${fd} from envwrap --listen`;
  const onListening = () => {
    log(`ready on ${where}`);
  };
  if (fd === null) server.listen(port, host, onListening);
  else server.listen({ fd }, onListening);
};

process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  log('SIGTERM: finishing requests in flight, then closing the database pool');
  server.close(() => pool.end().finally(() => process.exit(0)));
  setTimeout(() => process.exit(0), 8000).unref();
});

start();
