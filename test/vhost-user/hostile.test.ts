// The project's own hostile front-end against the real `virtio-ts serve blk` and `serve rng`
// processes (dist/src/cli/main.js on a real unix socket): every case of hostile-cases.ts, each
// asserting its outcome (refused with a logged reason and the connection closed, or a non-zero
// REPLY_ACK; a device error: CONFIG_CHANGE_MSG then the connection closed; or served), then
// that the process is alive, holds no more fds or guest mappings than at rest, serves a
// correct session on a new connection, and left guest memory outside the granted buffers as
// it was (a canary). No wait depends on timing: each waits for an event, with a bound.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RING_AREA, classes, correctSession, startServer, type Server } from './hostile-cases.js';
import { SocketFrontEnd } from './front-end.js';

for (const [type, mode] of [['rng', 'tolerant'], ['blk', 'tolerant'], ['rng', 'strict'], ['blk', 'strict']] as const) {
  describe(`hostile front-end against virtio-ts serve ${type} --${mode}`, () => {
    let dir = '';
    let srv: Server;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'virtio-ts-hostile-'));
      srv = await startServer(type, dir, undefined, mode);
    });
    after(async () => {
      try {
        if (srv?.alive) await srv.stop(true); // every suite has chains the guest broke rules in
      } finally {
        srv?.child.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    });
    for (const [cls, cases] of classes) {
      for (const c of cases) {
        if (c.only !== undefined && c.only !== type) continue;
        test(`${cls}: ${c.name}`, async () => {
          const from = srv.lines().length;
          const fe = new SocketFrontEnd(srv.path, undefined, c.ramInFile ? join(dir, 'hostile-guest-ram') : undefined);
          try {
            const granted = (await c.run(srv, fe, from)) ?? [];
            assert.deepEqual(fe.touched([RING_AREA, ...granted]), [], 'guest memory outside the granted buffers untouched');
          } finally {
            fe.close();
          }
          await correctSession(srv);
          assert.doesNotMatch(srv.lines().slice(from).join('\n'), /uncaught|TypeError|RangeError/, 'no internal error logged');
        });
      }
    }
  });
}
