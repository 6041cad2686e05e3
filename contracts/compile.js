#!/usr/bin/env node
// Compiles src/PaymentChannels.sol (and the test contracts) with the pinned solc-js and
// writes the ABI + bytecode artifacts the Rust crate embeds (artifacts/), so `cargo build`
// needs no Node.js. `node compile.js --check` compiles and fails if the committed artifact differs.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

// Each contract: its source and where its artifact goes. The test contracts exist only for
// the Rust tests (tests/chain_contract.rs) and never ship in the node.
const CONTRACTS = [
  { name: 'PaymentChannels', source: 'src/PaymentChannels.sol', artifact: 'artifacts/PaymentChannels.json' },
  { name: 'ReentrantPayee', source: 'test/ReentrantPayee.sol', artifact: 'artifacts/test/ReentrantPayee.json' },
];

function findImport(importPath) {
  const file = path.join(__dirname, 'node_modules', importPath);
  if (!file.startsWith(path.join(__dirname, 'node_modules') + path.sep)) {
    return { error: `import ${importPath} escapes node_modules` };
  }
  try {
    return { contents: fs.readFileSync(file, 'utf8') };
  } catch (e) {
    return { error: `import ${importPath} not found (run npm ci in contracts/): ${e.message}` };
  }
}

const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

const check = process.argv.includes('--check');
let failed = false;
for (const c of CONTRACTS) {
  const input = {
    language: 'Solidity',
    sources: { [c.source]: { content: fs.readFileSync(path.join(__dirname, c.source), 'utf8') } },
    settings,
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  for (const e of output.errors || []) console.error(e.formattedMessage);
  if ((output.errors || []).some((e) => e.severity === 'error')) process.exit(1);
  const contract = output.contracts[c.source][c.name];
  const artifact = {
    contractName: c.name,
    compiler: `solc-js ${solc.version()}`,
    settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion },
    abi: contract.abi,
    bytecode: '0x' + contract.evm.bytecode.object,
    deployedBytecode: '0x' + contract.evm.deployedBytecode.object,
  };
  const text = JSON.stringify(artifact, null, 2) + '\n';
  const file = path.join(__dirname, c.artifact);
  if (check) {
    const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (committed !== text) {
      console.error(`${c.artifact} differs from a fresh compile of ${c.source}: run \`npm run build\` in contracts/ and commit the artifact`);
      failed = true;
    } else {
      console.log(`${c.name}: committed artifact matches a fresh compile (${artifact.compiler})`);
    }
  } else {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    console.log(`${c.name}: wrote ${c.artifact} (${artifact.compiler})`);
  }
}
if (failed) process.exit(1);
