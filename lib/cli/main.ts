#!/usr/bin/env node
/**
 * The `bge-m3` command: encode texts, score pairs, build and search indexes, serve over HTTP,
 * evaluate, fine-tune the heads, and describe the runtime and a model; one file per command in
 * commands/. Without --model a command uses the bundled demo model, whose weights are random.
 */
import { Command } from 'commander';
import { registerDemo } from './commands/demo';
import { registerEncode } from './commands/encode';
import { registerEval } from './commands/eval';
import { registerFinetune } from './commands/finetune';
import { registerIndex } from './commands/index_build';
import { registerInfo } from './commands/info';
import { registerScore } from './commands/score';
import { registerSearch } from './commands/search';
import { registerServe } from './commands/serve';

async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program.name('bge-m3').description('BGE-M3 embeddings (dense, sparse, ColBERT) through ONNX Runtime')
    .showHelpAfterError();
  for (const register of [registerEncode, registerScore, registerInfo, registerEval, registerIndex, registerSearch, registerServe,
    registerFinetune, registerDemo]) {
    register(program);
  }
  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`bge-m3: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exitCode = 1;
});
