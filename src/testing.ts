/**
 * virtio-ts/testing: misbehaving peers for testing a device or a driver (like rust-vmm's
 * test utilities). Each scenario breaks exactly one clause of the spec and says which; a
 * monitor on the other side must name that clause. Browser-safe.
 *
 * @packageDocumentation
 */
export { SCENARIOS, scenariosFor, type Scenario, type ScenarioOutcome } from './testing/scenarios.js';
export { ReservedCidVsockDeviceType, reservedCidVsockDevice, overrunCredit, inflateFwdCnt, spoofSourceCid } from './testing/vsock.js';
