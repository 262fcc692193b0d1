// Test support (not a test file): one QEMU guest reaching a host process inside a network
// namespace the test makes (ip netns add), through a back-end that runs in that namespace and
// owns a TAP interface there (`serve net --tap`, `switch --dgram ... --tap`). The test gives the
// TAP its link-local address and brings it up (what the README tells users to do), starts the
// responder (tap-responder.ts) there, and runs the guest's init `tap` case: ping, MB MiB to the
// host and MB MiB back, both by md5. Nothing leaves the namespace; it is deleted at the end,
// and every process started here is stopped first.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runGuest, stop, type GuestOut } from './net-guests.js';

const RESPONDER = fileURLToPath(new URL('./tap-responder.js', import.meta.url));

/** `ip ARGS`, failing the test with ip's words. */
export function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `ip ${args.join(' ')}: ${r.stderr}${r.error?.message ?? ''} (needs root: ip netns, /dev/net/tun)`);
}

/** How the guest reaches the back-end, once it runs in the namespace. */
export interface Backend {
  /** The back-end process (stopped with SIGTERM at the end, before the namespace goes). */
  child: ChildProcess;
  /** QEMU's net arguments (default: -netdev vhost-user on `sock`, virtio-net-pci vectors=0). */
  netArgs?: string[];
  /** The vhost-user socket. */
  sock?: string;
}

/** The scenario: addresses, the TAP's name in the namespace, the back-end to start there. */
export interface NetnsGuestOptions {
  hostIp: string;
  guestIp: string;
  mac: string;
  mb: number;
  ifname: string;
  /** Starts the back-end in `ns` (prefix its command with `inNs`); resolves once the TAP exists. */
  backend(inNs: string[], dir: string, log: { text: string }): Promise<Backend>;
}

/** Runs the scenario; asserts ping and both md5s; returns the guest's output, the back-end's log and the work directory (the caller removes it). */
export async function guestInNetns(o: NetnsGuestOptions): Promise<{ guest: GuestOut; log: string; dir: string }> {
  const ns = `vt-tap-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-netns-'));
  const log = { text: '' };
  ip('netns', 'add', ns);
  let backend: Backend | undefined;
  let responder: ChildProcess | undefined;
  let out = '';
  let err = '';
  try {
    backend = await o.backend(['ip', 'netns', 'exec', ns], dir, log);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `${o.hostIp}/16`, 'dev', o.ifname);
    ip('-n', ns, 'link', 'set', o.ifname, 'up');
    const r = spawn('ip', ['netns', 'exec', ns, process.execPath, RESPONDER, o.hostIp, o.guestIp, String(o.mb)], { stdio: ['ignore', 'pipe', 'pipe'] });
    responder = r;
    r.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((res) => r.once('exit', (code) => res(code)));
    await new Promise<void>((res, rej) => {
      createInterface({ input: r.stdout! }).on('line', (l) => {
        out += l + '\n';
        if (l.startsWith('LISTENING')) res();
      });
      void exited.then((code) => rej(new Error(`the responder exited ${code} before listening: ${err}`)));
    });
    const g = await runGuest(backend.sock ?? '', o.mac, 'vectors=0', `vt.ip=${o.guestIp} vt.host=${o.hostIp} vt.mb=${o.mb}`, 100_000, 'tap', backend.netArgs);
    const code = await Promise.race([exited, new Promise<string>((res) => setTimeout(() => res('still running'), 20_000).unref())]);
    const where = `\nguest:\n${g.console.slice(-2000)}\nback-end:\n${log.text.slice(-2000)}\nresponder:\n${out}${err}`;
    assert.equal(g.results.get('ping'), 'ok', `the guest pings ${o.hostIp}${where}`);
    assert.equal(g.results.get('net-error'), undefined, where);
    assert.equal(code, 0, `the responder finished${where}`);
    const up = /^UP ([0-9a-f]{32}) (\d+)$/m.exec(out);
    const down = /^DOWN ([0-9a-f]{32}) (\d+)$/m.exec(out);
    assert.ok(up && down, where);
    assert.equal(up[2], String(o.mb << 20), 'the host got every byte');
    assert.equal(up[1], g.results.get('up-md5'), 'the host got what the guest sent');
    assert.equal(g.results.get('down-md5'), down[1], 'the guest got what the host sent');
    return { guest: g, log: log.text, dir };
  } finally {
    if (responder !== undefined) await stop(responder);
    if (backend !== undefined) await stop(backend.child);
    spawnSync('ip', ['netns', 'del', ns]);
  }
}
