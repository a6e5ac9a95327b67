// Runs an ONNX model with onnxruntime-node (the runtime the server uses) for the Python tests, which have no
// onnxruntime of their own on Debian. stdin: {"model": path, "inputs": {name: {"type", "dims", "data"}}};
// stdout: {name: {"dims", "data"}} for every output.
import ort from 'onnxruntime-node';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const arrays = { int64: (d) => BigInt64Array.from(d.map(BigInt)), int32: (d) => Int32Array.from(d), float32: (d) => Float32Array.from(d) };
const feeds = {};
for (const [name, { type, dims, data }] of Object.entries(request.inputs)) {
  feeds[name] = new ort.Tensor(type, arrays[type](data), dims);
}
const session = await ort.InferenceSession.create(request.model, { executionProviders: ['cpu'] });
const outputs = await session.run(feeds);
const result = {};
for (const [name, tensor] of Object.entries(outputs)) {
  result[name] = { dims: tensor.dims, data: Array.from(tensor.data, Number) };
}
result.__metadata = session.handler?.metadata ?? null;
process.stdout.write(JSON.stringify(result));
