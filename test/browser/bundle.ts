/**
 * Test support (not a test file): a compiled module bundled by esbuild for the browser platform
 * as one script that sets `globalName`, checked for Node imports (none may survive).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** The checkout's root (dist/test/browser/ is three folders below it). */
export const root = join(fileURLToPath(import.meta.url), '../../../..');

/** The script text of `entry` (relative to the root, a compiled file under dist/) bundled as an IIFE. */
export async function bundleForBrowser(entry: string, globalName: string): Promise<string> {
  const result = await build({ entryPoints: [join(root, entry)], bundle: true, platform: 'browser', format: 'iife', globalName, write: false, logLevel: 'silent' });
  const code = result.outputFiles[0].text;
  assert.ok(!/require\(["']node:/.test(code), 'no node: import survives in the bundle');
  return code;
}
