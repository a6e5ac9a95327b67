// Runs a tokenizer.json through @huggingface/tokenizers, as the server loads it (src/engine/model_folder.ts
// textTokenizer: no special tokens added on encode, none skipped and no clean-up on decode), for the Python tests.
// stdin: {"tokenizer": path, "encode": [text, ...], "decode": [[id, ...], ...]};
// stdout: {"encoded": [[id, ...], ...], "decoded": [text, ...]}.
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const tokenizer = new Tokenizer(JSON.parse(readFileSync(request.tokenizer, 'utf8')), {});
const encoded = (request.encode ?? []).map((text) => tokenizer.encode(text, { add_special_tokens: false }).ids);
const decoded = (request.decode ?? []).map((ids) =>
  ids.length === 0 ? '' : tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }));
process.stdout.write(JSON.stringify({ encoded, decoded }));
