/**
 * The daemon log of `serve`: pino on stderr, written synchronously (nothing is lost when the
 * process exits), in one of two formats:
 * - json: one JSON object per line (pino's format), for journald, log shippers, jq;
 * - pretty: one human-readable line per event (pino-pretty's prettyFactory: time, level,
 *   message, then the fields), coloured when stderr is a terminal.
 * Default: pretty when stderr is a TTY, json otherwise (a supervisor or a pipe reads it).
 * A closed stderr (EPIPE) never ends the server: the lines are dropped.
 */
import { writeSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';

export type LogFormat = 'json' | 'pretty';

export function defaultLogFormat(stderrIsTty: boolean): LogFormat {
  return stderrIsTty ? 'pretty' : 'json';
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes a whole line to fd 2: partial writes go on, a full non-blocking pipe (EAGAIN) is
 * waited for a little (bounded), and a reader that went away (EPIPE) drops the line: a log
 * line is not worth the server.
 */
function writeLine(line: string): void {
  let rest = Buffer.from(line);
  for (let tries = 0; rest.length > 0 && tries < 1000; ) {
    try {
      rest = rest.subarray(writeSync(2, rest));
    } catch (err) {
      if ((err as { code?: string }).code !== 'EAGAIN') return;
      tries++;
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
}

export function createLogger(name: string, level: string, format: LogFormat, colour: boolean): Logger {
  if (format === 'json') return pino({ name, level }, { write: writeLine });
  const pretty = prettyFactory({
    colorize: colour,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    hideObject: true, // the message says it all; the fields are for json
  });
  return pino({ name, level }, { write: (line: string) => writeLine(pretty(line)) });
}
