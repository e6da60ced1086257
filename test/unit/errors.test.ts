import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import { toHearthError } from '../../native/binding.js';
import { parseInteger } from '../../cli/options.js';

test('native error codes map onto the taxonomy, unknown ones to INTERNAL', () => {
  const native = (code: string) => Object.assign(new Error(`boom ${code}`), { code });
  assert.equal(toHearthError(native('MODEL_NOT_FOUND')).code, ErrorCode.NotFound);
  assert.equal(toHearthError(native('INVALID_SPLIT')).code, ErrorCode.InvalidArgument);
  assert.equal(toHearthError(native('KV_CACHE_FULL')).code, ErrorCode.ResourceExhausted);
  assert.equal(toHearthError(native('ABORTED')).code, ErrorCode.Cancelled);
  const unknown = toHearthError(native('SOMETHING_NEW'));
  assert.equal(unknown.code, ErrorCode.Internal);
  assert.equal(unknown.detail, 'SOMETHING_NEW');
  assert.equal(unknown.message, 'boom SOMETHING_NEW');
  assert.equal(toHearthError('plain').code, ErrorCode.Internal);
  const already = new HearthError(ErrorCode.Unavailable, 'x');
  assert.equal(toHearthError(already), already);
});

test('integer options are parsed strictly and named in errors', () => {
  assert.equal(parseInteger('42', '--seed'), 42);
  assert.throws(() => parseInteger('4.5', '--seed'), /--seed: '4.5' is not a whole number/);
  assert.throws(() => parseInteger('-1', '--seed', { min: 0 }), /--seed: '-1' is not a whole number >= 0/);
  assert.throws(() => parseInteger('70000', '--port', { min: 1, max: 65535 }), /from 1 to 65535/);
});
