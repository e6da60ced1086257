// Reading YAML config files and turning schema errors into messages that name the key.
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';

import { ErrorCode, HearthError, messageOf } from './errors.js';

export function readYamlFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new HearthError(ErrorCode.InvalidArgument, `cannot read config file ${path}: ${messageOf(e)}`);
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new HearthError(ErrorCode.InvalidArgument, `config file ${path} is not valid YAML: ${doc.errors[0]!.message}`);
  }
  return doc.toJS() ?? {};
}

/** "rpcPort: expected a number, got string; devices.0: ..." — every problem, each with its key path. */
export function describeIssues(error: z.ZodError, where: string): string {
  const lines = error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    return `${path}: ${issue.message}`;
  });
  return `${where}: ${lines.join('; ')}`;
}
