import { randomBytes } from 'node:crypto';

export function completionId(prefix: 'cmpl' | 'chatcmpl'): string {
  return `${prefix}-${randomBytes(12).toString('hex')}`;
}

export const SYSTEM_FINGERPRINT = 'dllm-serve-0.1';
