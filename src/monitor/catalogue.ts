/**
 * The clause catalogue as data: one entry per normative statement of VIRTIO 1.4 cs01
 * (795 ids) plus the project's structural rules (`struct.*`: things the ring layout makes
 * impossible to get right otherwise, such as a `next` index beyond the queue).
 * Generated from catalogue/*.tsv and the sources by scripts/gen-catalogue.mjs.
 */
import { CLAUSES } from './catalogue.generated.js';

/** The side a clause binds. */
export type Side = 'device' | 'driver';
/** The clause's level, as the spec words it. */
export type Level = 'MUST' | 'MUST NOT' | 'SHOULD' | 'SHOULD NOT' | 'MAY';
/**
 * How the project covers a clause: checked at run time (`enforced`), asserted by a test
 * (`tested`), not observable from the other side (`not-checkable`), outside what is implemented
 * (`unsupported`), or not yet covered (`open`).
 */
export type CoverageStatus = 'enforced' | 'tested' | 'not-checkable' | 'unsupported' | 'open';

/** One clause of the catalogue (catalogue/clauses.tsv), with how the project covers it. */
export interface ClauseEntry {
  id: string;
  section: string;
  side: Side;
  level: Level;
  legacy: boolean;
  /** Short description in the project's own words. */
  summary: string;
  status: CoverageStatus;
  reason: string;
  /** Source files that report the clause at run time (the files of `sites`). */
  checks: readonly string[];
  /** Test files that name the clause id (a literal, never a comment). */
  tests: readonly string[];
  /** True for the spec's catalogue (795 ids); false for the project's struct.* rules. */
  spec: boolean;
  /** The status catalogue/clauses.tsv declares (used when the code neither checks nor tests it). */
  declared: CoverageStatus;
  /** The named check sites that report the clause through the monitor (scripts/check-sites.mjs). */
  sites: readonly CheckSite[];
  /** The negative tests that claim the clause: `file` or `file > test name pattern`. */
  negatives: readonly string[];
  /** What limits the checks (catalogue/conditions.tsv): off by default, transports, scope. */
  conditions: readonly CheckCondition[];
}

/** A place in src/ that reports a clause through the monitor, by a stable name. */
export interface CheckSite {
  /** `clause@file:Class.method` (`#2` ... for further sites of the clause in the same function). */
  name: string;
  /** The source file, from the package root (`src/...`). */
  file: string;
  /** The line of the clause literal. */
  line: number;
  /**
   * Set when the full mutation audit found that disabling this site fails no negative test
   * (catalogue/uncaught-sites.tsv): the reason. Such a site does not make its clause enforced.
   */
  uncaught?: string;
}

/**
 * A limit on a clause's checks: `off-by-default` (an option turns them on),
 * `sync-transport-only` (run only where notify returns after the device's work),
 * `not-reached-by-own-drivers` (the project's own drivers never give the peer the chance to
 * break it; an embedder's driver can), `scope` (the clause says more than the checks cover).
 */
export interface CheckCondition {
  kind: 'off-by-default' | 'sync-transport-only' | 'not-reached-by-own-drivers' | 'scope';
  /** What the condition is, in a sentence. */
  note: string;
}

const byId = new Map<string, ClauseEntry>();
for (const c of CLAUSES) byId.set(c.id, c);

/** The catalogue entry of clause `id`, if there is one. */
export function clauseInfo(id: string): ClauseEntry | undefined {
  return byId.get(id);
}

/** Every clause of the catalogue, in catalogue order. */
export function allClauses(): readonly ClauseEntry[] {
  return CLAUSES;
}

/** The part of the spec a clause id belongs to (its first component, e.g. `split`). */
export function partOf(id: string): string {
  return id.slice(0, id.indexOf('.'));
}
