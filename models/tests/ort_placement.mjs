// Which execution provider ONNX Runtime assigns each node of a graph to, for the Python tests: opens the graph with
// the provider named on the command line and ONNX Runtime's verbose log, whose "Node placements" section lists, per
// provider, the nodes it took (session_state.cc, VerifyEachNodeIsAssignedToAnEp). stdout: {provider: [node names]}.
// The session is opened as the server opens it (all graph optimizations); the optimized graph, whose node names the
// log uses, is written to the third argument.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const [model, provider, optimized] = process.argv.slice(2);
if (process.env.ORT_PLACEMENT_CHILD) {
  const ort = (await import('onnxruntime-node')).default;
  await ort.InferenceSession.create(model, {
    executionProviders: [provider],
    graphOptimizationLevel: 'all',
    optimizedModelFilePath: optimized,
    logSeverityLevel: 0,
  });
} else {
  // The log is written by native code to the process's own stdout: read it from a child.
  const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), model, provider, optimized], {
    env: { ...process.env, ORT_PLACEMENT_CHILD: '1' },
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (child.status !== 0) {
    process.stderr.write(child.stderr);
    process.exit(child.status ?? 1);
  }
  const placed = {};
  let current = null;
  for (const line of (child.stdout + child.stderr).split('\n')) {
    const header = line.match(/Node\(s\) placed on \[(\w+)\]/);
    if (header) {
      current = placed[header[1]] = [];
      continue;
    }
    const node = line.match(/VerifyEachNodeIsAssignedToAnEp\]\s{3}\S+ \((.*)\)\s*$/);
    if (node && current) current.push(node[1]);
    else if (!line.includes('VerifyEachNodeIsAssignedToAnEp')) current = null;
  }
  process.stdout.write(JSON.stringify(placed));
}
