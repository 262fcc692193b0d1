// Test support (not a test file): the host process of the TAP guest test, run INSIDE the test's
// network namespace (`ip netns exec`), bound to vt0's link-local address. It takes what the
// guest sends to port 5001 and prints its md5 ("UP md5 bytes"), then connects to the guest's
// port 5002 (retrying while the guest is not listening yet), sends MB MiB of random bytes and
// prints their md5 ("DOWN md5 bytes"). Every wait is bounded: a hang exits 1 with the reason.
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';

const [host, guest, mbArg] = process.argv.slice(2);
const mb = Number(mbArg);
const say = (s: string) => process.stdout.write(s + '\n');
const fail = (why: string) => {
  process.stderr.write(`tap-responder: ${why}\n`);
  process.exit(1);
};
setTimeout(() => fail('no transfer finished within 240 s'), 240_000).unref();

const server = createServer((s: Socket) => {
  const h = createHash('md5');
  let bytes = 0;
  s.on('data', (d: Buffer) => {
    h.update(d);
    bytes += d.length;
  });
  s.on('end', () => {
    say(`UP ${h.digest('hex')} ${bytes}`);
    server.close();
    void down();
  });
  s.on('error', (e) => fail(`upload: ${e.message}`));
});
server.listen(5001, host, () => say(`LISTENING ${host}:5001`));

async function down(): Promise<void> {
  const data = randomBytes(mb << 20);
  for (let attempt = 0; attempt < 240; attempt++) {
    const ok = await new Promise<boolean>((res) => {
      const c = connect({ host: guest, port: 5002, localAddress: host });
      c.once('error', () => res(false));
      c.once('connect', () => {
        c.end(data, () => {
          say(`DOWN ${createHash('md5').update(data).digest('hex')} ${data.length}`);
          res(true);
        });
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  fail('the guest never listened on port 5002');
}
