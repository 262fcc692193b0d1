/**
 * Chain walking under hostile rings (split 2.7, packed 2.8): a device queue over guest memory
 * whose descriptor table or ring, available ring, event areas and indirect tables all come from
 * the fuzz input. The device pops every chain it accepts, reads the readable part and fills
 * the writable part through the chain cursors, and returns it. Then the input changes a few
 * ring bytes (a driver rewriting a ring under the device) and the device goes on.
 *
 * Invariants: nothing throws (pop, cursors, publish); the walk terminates (at most one pass of
 * the ring per round); every chain lies in guest memory and its byte counts add up; the device
 * writes only the ring and the writable buffers of the chain it holds; every verdict names a
 * catalogued clause; a fatal verdict leaves the queue broken and taking nothing.
 *
 * Input: [0] ring size selector, [1] feature bits, [2] number of rewrites, then per rewrite
 * u16 address (in the first region) and u16 value, then the memory image from address 0
 * (the ring starts at 0, indirect tables and buffers anywhere).
 */
import { Monitor, type Verdict } from '../src/monitor/monitor.js';
import { ChainReader, ChainWriter } from '../src/virtqueue/chain.js';
import type { RingFormat } from '../src/virtqueue/queue.js';
import { createDeviceQueue } from '../src/virtqueue/create.js';
import { descTableSize, availRingSize, usedRingSize } from '../src/spec/split-layout.js';
import { packedRingSize, EVENT_SIZE } from '../src/spec/packed-layout.js';
import { Input, catalogued, check, loadImage, onlyTyped, ringMemory } from './common.js';

const MAX_SIZE = 256;

export function fuzzChains(format: RingFormat, data: Uint8Array): void {
  const input = new Input(data);
  const sel = input.u8();
  const size = format === 'split' ? 1 << (sel % 9) : (sel % MAX_SIZE) + 1;
  const feat = input.u8();
  const features = { eventIdx: (feat & 1) !== 0, indirect: (feat & 2) !== 0, inOrder: (feat & 4) !== 0 };
  const tolerant = (feat & 8) !== 0;
  const rewrites: [number, number][] = [];
  for (let n = input.u8() % 4; n > 0; n--) rewrites.push([input.u16() & 0x7ffe, input.u16()]);
  const mem = ringMemory();
  loadImage(mem, input.rest());

  // Ring parts from address 0: split desc | avail | used; packed desc ring | driver event | device event.
  let desc = 0;
  let avail: number;
  let used: number;
  let ringEnd: number;
  if (format === 'split') {
    avail = descTableSize(size);
    used = (avail + availRingSize(size) + 3) & ~3;
    ringEnd = used + usedRingSize(size);
  } else {
    avail = packedRingSize(size);
    used = avail + EVENT_SIZE;
    ringEnd = used + EVENT_SIZE;
  }
  const monitor = new Monitor({ mode: tolerant ? 'tolerant' : 'strict' });
  const fatal: Verdict[] = [];
  const q = createDeviceQueue(format, mem, 0, MAX_SIZE, monitor, (v, isFatal) => {
    if (isFatal) fatal.push(v);
  });
  q.setSize(size);
  q.setAddresses({ desc: desc, avail: avail, used: used });
  q.setEnabled(true);

  const chain = q.newChain();
  const reader = new ChainReader();
  const writer = new ChainWriter();
  let holding = false;
  // Every write the device makes: the ring, or a writable buffer of the chain it holds.
  const hook = guard(chain, desc, ringEnd, () => holding);
  mem.onWrite = hook;
  const scratch = new Uint8Array(4096);

  const active = onlyTyped(() => q.activate(features), [], 'activate');
  if (active) {
    for (let round = 0; round <= rewrites.length; round++) {
      if (round > 0) {
        const [addr, value] = rewrites[round - 1];
        mem.onWrite = null;
        mem.writeU16(addr, value);
        mem.onWrite = hook;
      }
      onlyTyped(() => serve(), [], `${format} chain walk`);
    }
  }
  catalogued(monitor.verdicts);
  if (fatal.length > 0) {
    check(q.broken, `fatal verdict ${fatal[0].clause} left the queue running`);
    check(!q.pop(chain), 'a broken queue gave a chain');
  }

  function serve(): void {
    let pops = 0;
    let passes = 0;
    q.disableNotifications();
    do {
      while (q.pop(chain)) {
        holding = true;
        check(++pops <= size, `more than ${size} chains in one pass of a ring of ${size}: the walk does not terminate`);
        checkChain();
        reader.reset(mem, chain);
        while (reader.remaining > 0) reader.readSome(scratch);
        check(reader.position === chain.readableBytes, 'the reader stopped short');
        writer.reset(mem, chain);
        const n = Math.min(writer.remaining, 1 << 20);
        writer.fill(n, 0xa5);
        q.addUsed(chain.head, n);
        holding = false;
        check(q.inFlightCount <= size, `${q.inFlightCount} buffers in flight on a ring of ${size}`);
      }
      q.publish();
      check(++passes <= size + 2, 'notifications keep reporting new buffers');
    } while (q.enableNotifications());
  }

  function checkChain(): void {
    check(chain.count <= chain.capacity && chain.readable <= chain.count, `chain counts ${chain.readable}/${chain.count}/${chain.capacity}`);
    if (format === 'split') check(chain.head >= 0 && chain.head < size, `split head ${chain.head} outside a ring of ${size}`);
    let r = 0;
    let w = 0;
    for (let i = 0; i < chain.count; i++) {
      const a = chain.addrs[i];
      const l = chain.lens[i];
      check(l === 0 || mem.isBacked(a, l), `chain buffer [0x${a.toString(16)}, +${l}) outside guest memory`);
      if (i < chain.readable) r += l;
      else w += l;
    }
    check(r === chain.readableBytes && w === chain.writableBytes, `chain byte counts ${chain.readableBytes}/${chain.writableBytes} vs ${r}/${w}`);
  }
}

function guard(chain: { readable: number; count: number; addrs: Float64Array; lens: Uint32Array }, desc: number, ringEnd: number, holding: () => boolean) {
  return (addr: number, len: number): void => {
    if (addr >= desc && addr + len <= ringEnd) return;
    if (holding()) {
      for (let i = chain.readable; i < chain.count; i++) if (addr >= chain.addrs[i] && addr + len <= chain.addrs[i] + chain.lens[i]) return;
    }
    throw new Error(`the device wrote [0x${addr.toString(16)}, +${len}) outside the ring and the chain's writable buffers`);
  };
}
