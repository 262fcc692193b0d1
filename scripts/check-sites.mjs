// The static map from clause ids to the code that checks them and the tests that claim them,
// read from the syntax tree (the `typescript` package), never from text: a clause id in a
// comment, a label or a log message counts for nothing.
//
// - A reporter is Monitor.report, or any function or method that passes one of its own
//   parameters, unchanged, as the clause argument of a reporter (found to a fixed point, so a
//   new wrapper such as `violation(clause, ...)` needs no registration).
// - A check site is a call of a reporter whose clause argument is a clause id literal, a
//   conditional of literals (`a ? 'x' : 'y'`: one site per literal), or a local const holding
//   one. Its stable name is `clause@file:Class.method` (`#2`, `#3` for a second or third site
//   of the same clause in the same function); it has a source line.
// - A negative test claims a clause when a test/negative/** file passes its literal id to a
//   call (an assertion or a helper such as expectMmio), or when a misbehaviour scenario of
//   src/testing/scenarios.ts names it as its broken clause (first argument of the scenario
//   builder or its `clause:` property; `covers`/`echoes` are not claims).
// Used by gen-catalogue.mjs (the status) and mutation-audit.mjs (which patches the same sites
// in the compiled JavaScript, found by the same names).
import ts from 'typescript';
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';

/** A clause id, the whole of a string literal. */
export const ID = /^(?:basic|init|split|packed|pci|mmio|reserved|net|blk|console|entropy|vsock|fs|struct)\.[a-z0-9-]+\.(?:device|driver)\.\d+$/;
export const GENERATED = 'src/monitor/catalogue.generated.ts';
export const SCENARIOS = 'src/testing/scenarios.ts';

export function walk(dir, ext = '.ts') {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p, ext));
    else if (p.endsWith(ext) && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

export function parse(file, text = readFileSync(file, 'utf8')) {
  const kind = file.endsWith('.js') || file.endsWith('.mjs') ? ts.ScriptKind.JS : ts.ScriptKind.TS;
  return ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
}

function isStr(n) {
  return ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n);
}

function calleeName(call) {
  const e = call.expression;
  if (ts.isIdentifier(e)) return e.text;
  if (ts.isPropertyAccessExpression(e)) return e.name.text;
  return undefined;
}

function isFunctionLike(n) {
  return ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isArrowFunction(n) || ts.isFunctionExpression(n) || ts.isConstructorDeclaration(n);
}

/** `Class.method`, `function`, `Class.constructor`, `const name = () =>` ...: where a site lives. */
export function enclosingName(node) {
  const parts = [];
  for (let n = node.parent; n; n = n.parent) {
    if (ts.isMethodDeclaration(n) || ts.isFunctionDeclaration(n) || ts.isGetAccessor(n) || ts.isSetAccessor(n)) parts.unshift(n.name?.getText() ?? '<anonymous>');
    else if (ts.isConstructorDeclaration(n)) parts.unshift('constructor');
    else if ((ts.isArrowFunction(n) || ts.isFunctionExpression(n)) && n.parent && (ts.isVariableDeclaration(n.parent) || ts.isPropertyDeclaration(n.parent) || ts.isPropertyAssignment(n.parent)))
      parts.unshift(n.parent.name.getText());
    else if (ts.isClassDeclaration(n) || ts.isClassExpression(n)) {
      parts.unshift(n.name?.text ?? '<class>');
      break;
    }
  }
  // The outermost named function and its class are enough, and stable under small edits.
  return parts.length === 0 ? '<module>' : parts.length <= 2 ? parts.join('.') : `${parts[0]}.${parts[1]}`;
}

function nearestFunction(node) {
  for (let n = node.parent; n; n = n.parent) if (isFunctionLike(n)) return n;
  return undefined;
}

/** The literal clause ids an expression can evaluate to (literals, conditionals of them), or null. */
function literalIds(expr, scope) {
  if (isStr(expr)) return ID.test(expr.text) ? [expr] : null;
  if (ts.isParenthesizedExpression(expr)) return literalIds(expr.expression, scope);
  if (ts.isConditionalExpression(expr)) {
    const a = literalIds(expr.whenTrue, scope);
    const b = literalIds(expr.whenFalse, scope);
    return a && b ? [...a, ...b] : null;
  }
  if (ts.isIdentifier(expr) && scope) {
    // A local const in the same function: `const clause = x ? 'a' : 'b'; violation(clause, ...)`.
    let found = null;
    const visit = (n) => {
      if (found) return;
      if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.name.text === expr.text && n.initializer && ts.isVariableDeclarationList(n.parent) && n.parent.flags & ts.NodeFlags.Const)
        found = literalIds(n.initializer, null);
      else ts.forEachChild(n, visit);
    };
    visit(scope.body ?? scope);
    return found;
  }
  return null;
}

/**
 * Reporters by name: name -> clause argument index. Starts from Monitor.report (argument 0)
 * and adds every function that forwards one of its parameters there, until nothing changes.
 */
export function findReporters(sources) {
  const reporters = new Map([['report', new Set([0])]]);
  let changed = true;
  while (changed) {
    changed = false;
    for (const sf of sources) {
      const visit = (n) => {
        if (ts.isCallExpression(n)) {
          const name = calleeName(n);
          const idx = name !== undefined ? reporters.get(name) : undefined;
          if (idx) {
            for (const i of idx) {
              const arg = n.arguments[i];
              if (!arg || !ts.isIdentifier(arg)) continue;
              const fn = nearestFunction(n);
              if (!fn || !fn.name && !(fn.parent && (ts.isVariableDeclaration(fn.parent) || ts.isPropertyDeclaration(fn.parent)))) continue;
              const p = fn.parameters.findIndex((q) => ts.isIdentifier(q.name) && q.name.text === arg.text);
              if (p < 0) continue;
              const fname = fn.name ? fn.name.getText() : fn.parent.name.getText();
              if (!reporters.has(fname)) reporters.set(fname, new Set());
              if (!reporters.get(fname).has(p)) {
                reporters.get(fname).add(p);
                changed = true;
              }
            }
          }
        }
        ts.forEachChild(n, visit);
      };
      visit(sf);
    }
  }
  return reporters;
}

/** The source files whose reports are runtime checks: src/ but the CLI, the scenarios and the generated catalogue. */
export function checkFiles(root) {
  return walk(join(root, 'src')).filter((f) => {
    const rel = relative(root, f);
    return rel !== GENERATED && rel !== SCENARIOS && !rel.startsWith('src/cli/');
  });
}

/**
 * Every check site in `files` (parsed with `rel` naming them as their .ts source): {clause,
 * name, file, line, start, end} (start/end: the literal's offsets in that text), and the
 * clause-id literals that are not at a site (`labels`: context, comments-in-strings, tables).
 */
export function findSites(files, rel, reporters) {
  const sources = files.map((f) => parse(f));
  reporters ??= findReporters(sources);
  const sites = [];
  const labels = [];
  const seen = new Set();
  for (const sf of sources) {
    const file = rel(sf.fileName);
    const counts = new Map();
    const atSite = new Set();
    const visit = (n) => {
      if (ts.isCallExpression(n)) {
        const name = calleeName(n);
        for (const i of (name !== undefined && reporters.get(name)) || []) {
          const arg = n.arguments[i];
          if (!arg) continue;
          const lits = literalIds(arg, nearestFunction(n));
          for (const lit of lits ?? []) {
            if (seen.has(lit)) continue; // a const used by two calls is one site
            seen.add(lit);
            atSite.add(lit);
            const fn = enclosingName(n);
            const key = `${lit.text}@${file}:${fn}`;
            const k = (counts.get(key) ?? 0) + 1;
            counts.set(key, k);
            sites.push({
              clause: lit.text,
              name: k === 1 ? key : `${key}#${k}`,
              file,
              line: sf.getLineAndCharacterOfPosition(lit.getStart(sf)).line + 1,
              start: lit.getStart(sf),
              end: lit.getEnd(),
              reporter: name,
            });
          }
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
    const lab = (n) => {
      if (isStr(n) && ID.test(n.text) && !atSite.has(n)) labels.push({ clause: n.text, file, line: sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1 });
      ts.forEachChild(n, lab);
    };
    lab(sf);
  }
  return { sites, labels, reporters };
}

function enclosingTestTitle(node, sf) {
  for (let n = node.parent; n; n = n.parent) {
    if (ts.isCallExpression(n) && ['test', 'it'].includes(calleeName(n) ?? '') && n.arguments[0] && isStr(n.arguments[0])) return n.arguments[0].text;
  }
  return undefined;
}

/**
 * The negative tests' claims: clause -> [{file, test}] where `test` is a name pattern that
 * selects the claiming test (a scenario's `clause: title`, or the enclosing test's title) or
 * undefined (the whole file).
 */
export function findNegativeClaims(root) {
  const claims = new Map();
  const add = (clause, claim) => {
    if (!claims.has(clause)) claims.set(clause, []);
    const list = claims.get(clause);
    if (!list.some((c) => c.file === claim.file && c.test === claim.test)) list.push(claim);
  };
  for (const f of walk(join(root, 'test/negative'))) {
    const sf = parse(f);
    const file = relative(root, f);
    const visit = (n) => {
      if (isStr(n) && ID.test(n.text)) {
        // Any literal (an assertion's expected list, a helper's argument, a table the tests
        // loop over); never a comment. The mutation audit proves each claim.
        add(n.text, { file, test: enclosingTestTitle(n, sf) });
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  const scen = join(root, SCENARIOS);
  if (existsSync(scen)) {
    const sf = parse(scen);
    const visit = (n) => {
      if (ts.isVariableDeclaration(n) && n.name.getText() === 'SCENARIOS' && n.initializer && ts.isArrayLiteralExpression(n.initializer)) {
        for (const el of n.initializer.elements) {
          let clause;
          if (ts.isCallExpression(el) && el.arguments[0] && isStr(el.arguments[0]) && ID.test(el.arguments[0].text)) clause = el.arguments[0].text;
          else if (ts.isObjectLiteralExpression(el)) {
            const p = el.properties.find((q) => ts.isPropertyAssignment(q) && q.name.getText() === 'clause' && isStr(q.initializer));
            if (p && ID.test(p.initializer.text)) clause = p.initializer.text;
          }
          if (clause) add(clause, { file: 'test/negative/scenarios.test.ts', test: `${clause}: `, scenario: true });
        }
        return;
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return claims;
}

/** Every clause-id literal (not a comment) in the given files: clause -> Set of files. */
export function literalMentions(root, files) {
  const map = new Map();
  for (const f of files) {
    const sf = parse(f);
    const rel = relative(root, f);
    const visit = (n) => {
      if (isStr(n) && ID.test(n.text)) {
        if (!map.has(n.text)) map.set(n.text, new Set());
        map.get(n.text).add(rel);
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return map;
}

/** The sites the last full audit (scripts/mutation-audit.mjs) found uncaught, with why (gen-catalogue does not count them). */
export const UNCAUGHT = 'catalogue/uncaught-sites.tsv';

/** The known-uncaught sites: name -> reason. */
export function knownUncaught(base) {
  const file = join(base, UNCAUGHT);
  if (!existsSync(file)) return new Map();
  const rows = readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0 && !l.startsWith('#')).slice(1);
  return new Map(rows.map((l) => l.split('\t')).map(([site, reason]) => [site, reason ?? '']));
}
