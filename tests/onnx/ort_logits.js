#!/usr/bin/env node
// Runs an ONNX model exported by `fl-compress export` in ONNX Runtime
// (onnxruntime-node, CPU) on the images of an MNIST-format IDX file and writes
// the logits as little-endian float32, N x classes, row-major.
//
//   node tests/onnx/ort_logits.js MODEL.onnx IMAGES.idx3-ubyte OUT.bin
//
// onnxruntime-node is looked up in $FEDGE_ORT_DIR/node_modules, then in
// .deps/ort/node_modules of the repository (scripts/setup.sh installs it there).
'use strict';
const fs = require('fs');
const path = require('path');

function loadOrt() {
  const dirs = [process.env.FEDGE_ORT_DIR, path.join(__dirname, '..', '..', '.deps', 'ort')];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.resolve(d, 'node_modules', 'onnxruntime-node');
    if (fs.existsSync(p)) return require(p);
  }
  console.error('onnxruntime-node not found: run bash scripts/setup.sh (or set FEDGE_ORT_DIR)');
  process.exit(2);
}

async function main() {
  const [modelPath, imagesPath, outPath] = process.argv.slice(2);
  if (!outPath) {
    console.error('usage: ort_logits.js MODEL.onnx IMAGES.idx3-ubyte OUT.bin');
    process.exit(2);
  }
  const ort = loadOrt();
  const idx = fs.readFileSync(imagesPath);
  if (idx.readUInt32BE(0) !== 0x803) throw new Error(imagesPath + ': not an IDX3 unsigned-byte file');
  const n = idx.readUInt32BE(4), rows = idx.readUInt32BE(8), cols = idx.readUInt32BE(12);
  const pixels = idx.subarray(16);
  const session = await ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const batch = 500;
  const chunks = [];
  for (let start = 0; start < n; start += batch) {
    const count = Math.min(batch, n - start);
    const data = new Float32Array(count * rows * cols);
    for (let i = 0; i < data.length; ++i) data[i] = pixels[start * rows * cols + i];
    const input = new ort.Tensor('float32', data, [count, 1, rows, cols]);
    const out = await session.run({ pixels: input });
    chunks.push(Buffer.from(out.logits.data.buffer, out.logits.data.byteOffset,
                            out.logits.data.byteLength));
  }
  fs.writeFileSync(outPath, Buffer.concat(chunks));
  console.log(`ort ${ort.env.versions ? ort.env.versions.common : ''}: ${n} images -> ${outPath}`);
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
