#!/usr/bin/env node
// Removes dist/ so a build never leaves stale compiled files (a deleted test would still run).
import { rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

rmSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'dist'), { recursive: true, force: true });
