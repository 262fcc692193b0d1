/**
 * Fuzz target: the inflight-buffer reader (src/transports/vhost-user/inflight.ts). After a
 * restart the buffer comes from the front-end (SET_INFLIGHT_FD) and is untrusted: whatever it
 * holds, recover() either refuses it with a VhostUserError of kind 'inflight' (the back-end
 * ends the connection with that reason) or returns a recovery a ring can follow, and the region
 * then tracks new requests without failing.
 * Invariants: no exception but an 'inflight' VhostUserError from recover(); split: resubmitted heads are
 * distinct and inside the ring; packed: buffer ids distinct, no more descriptors in flight
 * than the ring has, positions inside the ring; afterwards taken/returned/publish cycles on
 * the recovered region do not throw and write only inside the region.
 * Input: [0] format and ring size, [1..2] used index, [3] used wrap / ring flag pattern, then
 * the region's bytes.
 */
import { PackedInflightRegion, SplitInflightRegion, packedInflightQueueSize, splitInflightQueueSize } from '../src/transports/vhost-user/inflight.js';
import { isVirtioTsError } from '../src/errors.js';
import { Finding, Input, check } from './common.js';

function refusedOrDone(fn: () => void, what: string): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    if (err instanceof Finding) throw err;
    if (isVirtioTsError(err, 'inflight')) return false; // a refusal with a reason
    throw new Finding(`${what} threw ${(err as Error)?.name}: ${(err as Error)?.message}\n${(err as Error)?.stack}`);
  }
}

export function fuzz(data: Uint8Array): void {
  const input = new Input(data);
  const sel = input.u8();
  const packed = (sel & 1) === 1;
  const n = (sel >> 1) % 16 + 1;
  const usedIdx = input.u16();
  const pattern = input.u8();
  const bytes = packed ? packedInflightQueueSize(n) : splitInflightQueueSize(n);
  // The region sits between two guard areas in one buffer: a write outside it would show there.
  const guard = 64;
  const buffer = new ArrayBuffer(bytes + 2 * guard);
  const all = new Uint8Array(buffer);
  all.set(input.rest().subarray(0, bytes), guard);
  all.fill(0xee, 0, guard);
  all.fill(0xee, guard + bytes);
  const guardsIntact = () => all.subarray(0, guard).every((b) => b === 0xee) && all.subarray(guard + bytes).every((b) => b === 0xee);

  if (!packed) {
    const region = new SplitInflightRegion(buffer, guard, n);
    let rec: ReturnType<SplitInflightRegion['recover']> = null;
    if (!refusedOrDone(() => (rec = region.recover(usedIdx)), 'split recover')) return;
    const r = rec as ReturnType<SplitInflightRegion['recover']>;
    const resubmit = r?.resubmit ?? [];
    check(new Set(resubmit).size === resubmit.length && resubmit.every((h) => Number.isInteger(h) && h >= 0 && h < n), `split resubmit ${resubmit}`);
    // The ring goes on: the resubmitted heads are served, then new ones, all returned.
    const ok = refusedOrDone(() => {
      let idx = usedIdx;
      for (const h of resubmit) {
        region.returned(h);
        region.published(++idx & 0xffff);
      }
      for (let h = 0; h < n; h++) region.taken(h);
      for (let h = n - 1; h >= 0; h--) region.returned(h);
      region.published((idx + n) & 0xffff);
    }, 'split tracking after recovery');
    check(ok, 'split tracking refused after a recovery it accepted');
  } else {
    const region = new PackedInflightRegion(buffer, guard, n);
    const usedWrap = (pattern & 1) === 1;
    const used = usedIdx % n;
    let rec: ReturnType<PackedInflightRegion['recover']> = null;
    if (!refusedOrDone(() => (rec = region.recover((slot) => ((pattern >> (slot % 8)) & 1 ? 1 << 7 : 1 << 15), used, usedWrap)), 'packed recover')) return;
    const r = rec as ReturnType<PackedInflightRegion['recover']>;
    let inFlight = 0;
    if (r !== null) {
      const ids = r.resubmit.map((b) => b.head);
      check(new Set(ids).size === ids.length, `packed resubmit ids ${ids}`);
      inFlight = r.resubmit.reduce((s, b) => s + b.descriptors.length, 0);
      check(inFlight <= n, `${inFlight} descriptors in flight on a ring of ${n}`);
      check(r.avail >= 0 && r.avail < n && r.used >= 0 && r.used < n, `positions ${r.avail}/${r.used} outside a ring of ${n}`);
    }
    const ok = refusedOrDone(() => {
      const ids = (r?.resubmit ?? []).map((b) => b.head);
      // The resubmitted buffers are used, then the free slots are taken by new one-descriptor buffers.
      for (const id of ids) region.returned(id);
      region.publishing(used, usedWrap);
      region.published(used, usedWrap);
      const fresh: number[] = [];
      for (let k = 0; k < n; k++) {
        const id = 0x8000 + k;
        region.taken(id);
        region.descriptor(0x1000 * k, 512, id, 0, true);
        fresh.push(id);
      }
      for (const id of fresh) region.returned(id);
      region.publishing(used, usedWrap);
      region.published(used, usedWrap);
    }, 'packed tracking after recovery');
    check(ok, 'packed tracking refused after a recovery it accepted');
  }
  check(guardsIntact(), 'the region wrote outside its bytes');
}
