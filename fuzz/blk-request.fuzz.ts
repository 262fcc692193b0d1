/**
 * Fuzz target: the virtio-blk request parser (parseBlkRequest in src/devices/blk/request.ts) over a
 * chain whose buffers and guest memory come from the input (the chain as the walker leaves
 * it: readable buffers first, each inside guest memory, split at region boundaries).
 * Invariants: the parser never throws and never writes guest memory; the status byte is the
 * last byte of a writable buffer; IN/GET_ID ranges lie in the writable part, in order, and add
 * up to the payload (everything before the status byte); an OUT payload is exactly the
 * readable bytes after the header; DISCARD/WRITE_ZEROES/SECURE_ERASE get one segment per
 * whole 16 bytes.
 * Input: [0] buffer count, then per buffer u32 address, u16 length, u8 writable; then the
 * memory image.
 */
import { BlkType } from '../src/spec/blk.js';
import { parseBlkRequest } from '../src/devices/blk/request.js';
import { ChainReader, DescriptorChain } from '../src/virtqueue/chain.js';
import { Input, check, loadImage, onlyTyped, ringMemory } from './common.js';

const chain = new DescriptorChain(64);
const reader = new ChainReader();

export function fuzz(data: Uint8Array): void {
  const input = new Input(data);
  const count = input.u8() % 9;
  const bufs: [number, number, boolean][] = [];
  for (let i = 0; i < count; i++) bufs.push([input.u32() % 0x22000, input.u16() % 0x9000, (input.u8() & 1) === 1]);
  const mem = ringMemory();
  loadImage(mem, input.rest());
  chain.clear(0);
  // The walker's order: device-readable buffers before device-writable ones (message framing).
  for (const [addr, len, writable] of [...bufs.filter((b) => !b[2]), ...bufs.filter((b) => b[2])]) {
    if (chain.append(mem, addr, len, writable) !== 'ok') return; // the walker refuses such a chain
  }
  mem.onWrite = (addr, len) => {
    throw new Error(`the parser wrote [0x${addr.toString(16)}, +${len})`);
  };
  const req = onlyTyped(() => parseBlkRequest(mem, chain, reader), [], 'parseBlkRequest');
  check(req !== undefined, 'no answer');
  if (req.kind === 'no-status') {
    check(chain.writableBytes === 0, 'no status with writable bytes');
    return;
  }
  const inWritable = (a: number, l: number) => {
    for (let i = chain.readable; i < chain.count; i++) if (a >= chain.addrs[i] && a + l <= chain.addrs[i] + chain.lens[i]) return true;
    return false;
  };
  check(inWritable(req.statusAddr, 1) && mem.isBacked(req.statusAddr, 1), `status byte at 0x${req.statusAddr.toString(16)} is not in a writable buffer`);
  if (req.kind === 'short') {
    check(chain.readableBytes < 16, 'a full header called short');
    return;
  }
  check(chain.readableBytes >= 16, 'a request from a short header');
  check(req.dataOut === chain.readableBytes - 16 && req.dataIn === chain.writableBytes - 1, 'payload sizes');
  if (req.type === BlkType.IN || req.type === BlkType.GET_ID) {
    let total = 0;
    for (const [a, l] of req.inRanges) {
      check(l > 0 && inWritable(a, l), `IN range [0x${a.toString(16)}, +${l}) outside the writable part`);
      total += l;
    }
    check(total === req.dataIn, `IN ranges hold ${total} bytes, payload is ${req.dataIn}`);
  } else check(req.inRanges.length === 0, 'IN ranges for a request that writes nothing');
  if (req.type === BlkType.OUT) check(req.outData !== null && req.outData.length === req.dataOut, 'OUT payload length');
  else check(req.outData === null, 'an OUT payload for another type');
  const segmented = req.type === BlkType.DISCARD || req.type === BlkType.WRITE_ZEROES || req.type === BlkType.SECURE_ERASE;
  check(req.segs.length === (segmented ? Math.floor(req.dataOut / 16) : 0), `${req.segs.length} segments for ${req.dataOut} bytes`);
}
