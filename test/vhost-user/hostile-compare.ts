// By hand, not in the suite: the hostile cases against another vhost-user-blk back-end
// (qemu-storage-daemon by default), to compare outcomes with ours. For each case it prints
// whether our expectation held there and, when not, what that back-end did: ended the
// connection, left it open, died; and whether a correct session on a new connection was
// served afterwards and guest memory outside the granted buffers was left alone.
//   node dist/test/vhost-user/hostile-compare.js [qsd|serve] [blk|rng]
// (rng: `serve` only; qemu-storage-daemon exports block devices.)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RING_AREA, bounds, classes, correctSession, startServer } from './hostile-cases.js';
import { SocketFrontEnd } from './front-end.js';

const which = process.argv[2] ?? 'qsd';
const type = (process.argv[3] ?? 'blk') as 'blk' | 'rng';
const qsd = (path: string, image: string) => [
  'qemu-storage-daemon',
  '--blockdev', `driver=file,node-name=f0,filename=${image}`,
  '--blockdev', 'driver=raw,node-name=d0,file=f0',
  '--export', `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${path},writable=on`,
];

bounds.waitMs = 3000; // a back-end that does not do what we do is not waited for long
const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-compare-'));
let srv = await startServer(type, dir, which === 'qsd' ? qsd : undefined);
const rows: string[] = [];
try {
  for (const [cls, cases] of classes) {
    for (const c of cases) {
      if (c.only !== undefined && c.only !== type) continue;
      const from = srv.lines().length;
      const fe = new SocketFrontEnd(srv.path);
      let outcome = 'as ours';
      try {
        const granted = (await c.run(srv, fe, from)) ?? [];
        const bad = fe.touched([RING_AREA, ...granted]);
        if (bad.length > 0) outcome = `memory outside the granted buffers written at ${bad.map((x) => `0x${x.toString(16)}`).join(',')}`;
      } catch (err) {
        // Not what we do: look at what it did instead (a bounded wait, by hand only).
        const what = err instanceof Error ? err.message.split('\n')[0] : String(err);
        let end = 'connection left open';
        try {
          const e = await fe.ended(2000);
          end = `connection ended (${e.how}, ${e.replies.length} reply/replies first)`;
        } catch {
          // still open
        }
        outcome = `differs: ${end}; ours expected: ${what.slice(0, 140)}`;
      } finally {
        fe.close();
      }
      let after = '';
      if (!srv.alive) {
        after = `DIED (${srv.child.exitCode ?? srv.child.signalCode}); restarted`;
        srv = await startServer(type, dir, which === 'qsd' ? qsd : undefined);
      } else {
        // Fds it still holds once the connection is gone are leaked (then counted from there).
        await new Promise((res) => setTimeout(res, 300));
        const leaked = srv.fds() - srv.fdBaseline;
        if (leaked > 0) srv.fdBaseline += leaked;
        try {
          await correctSession(srv);
          after = 'next session served';
        } catch (err) {
          after = `next session FAILED: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`;
        }
        if (leaked > 0) after += `; ${leaked} fd(s) leaked`;
      }
      const logged = srv.lines().slice(from).filter((l) => !/front-end (connected|gone)/.test(l)).slice(0, 2).join(' | ');
      rows.push(`| ${cls}: ${c.name} | ${outcome} | ${after} | ${logged.slice(0, 200)} |`);
      console.log(rows[rows.length - 1]);
    }
  }
} finally {
  srv.child.kill('SIGTERM');
  await srv.exited;
  rmSync(dir, { recursive: true, force: true });
}
