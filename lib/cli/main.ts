#!/usr/bin/env node
/**
 * The `bge-m3` command: encode texts, score pairs, build and search indexes, serve over HTTP,
 * evaluate, fine-tune the heads, and describe the runtime and a model; one file per command in
 * commands/. Without --model a command uses the bundled demo model, whose weights are random.
 */
import { Command } from 'commander';
import { VERSION } from '../engine/runtime';
import { registerDemo } from './commands/demo';
import { registerEncode } from './commands/encode';
import { registerEval } from './commands/eval';
import { registerFinetune } from './commands/finetune';
import { registerIndex } from './commands/index_build';
import { registerInfo } from './commands/info';
import { registerScore } from './commands/score';
import { registerSearch } from './commands/search';
import { registerServe } from './commands/serve';
import { registerStore } from './commands/store';

async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program.name('bge-m3').description('BGE-M3 embeddings (dense, sparse, ColBERT) through ONNX Runtime')
    .version(VERSION, '-V, --version', 'print the version of bge-m3')
    .showHelpAfterError();
  for (const register of [registerEncode, registerScore, registerInfo, registerEval, registerIndex, registerSearch, registerServe, registerStore,
    registerFinetune, registerDemo]) {
    register(program);
  }
  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  // Node's own errors already begin with their code ("ENOENT: no such file ...").
  const code = e.code && !message.startsWith(`${e.code}:`) ? `${e.code}: ` : '';
  process.stderr.write(`bge-m3: ${code}${message}\n`);
  process.exitCode = 1;
});
