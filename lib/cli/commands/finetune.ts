/**
 * `bge-m3 finetune-heads`: the sparse and ColBERT heads fine-tuned on {query, pos, neg} JSONL.
 * Ctrl-C (or SIGTERM) finishes the step, saves a checkpoint that --resume continues, and exits 130.
 */
import type { Command, OptionValues } from 'commander';
import { M3Error } from '../../base/errors';
import { finetuneHeads, type FinetuneResult } from '../../training/finetune';
import { addDeviceFlags, loadOptions, nonNegativeInt, nonNegativeNumber, positiveInt, positiveNumber, weightList } from '../args';
import { finetuneReporter } from '../finetune_progress';

export function registerFinetune(program: Command): void {
  addDeviceFlags(program.command('finetune-heads'))
    .description('fine-tune the sparse and ColBERT heads on {query, pos, neg} JSONL with self-knowledge distillation (encoder frozen)')
    .requiredOption('-m, --model <dir|id>', 'source model directory or hub id such as BAAI/bge-m3 (BAAI layout; never modified)')
    .option('--revision <rev>', 'with a hub id: the branch, tag or commit (default main)')
    .requiredOption('-d, --data <file>', 'training JSONL: {"query", "pos": [...], "neg": [...]} per line')
    .requiredOption('-o, --out <dir>', 'output model directory (written atomically)')
    .option('--epochs <n>', 'passes over the data', positiveInt, 1)
    .option('--lr <x>', "Adam's learning rate", positiveNumber, 1e-4)
    .option('--weight-decay <x>', 'AdamW weight decay', nonNegativeNumber, 0)
    .option('--group-size <n>', 'passages per query: 1 positive + n-1 negatives', positiveInt, 8)
    .option('--batch-size <n>', 'queries per step (in-batch negatives across them)', positiveInt, 8)
    .option('--seed <n>', 'shuffling and sampling seed', nonNegativeInt, 0)
    .option('--temperature <x>', 'InfoNCE temperature', positiveNumber, 0.02)
    .option('--loss-weights <d,s,c>', 'mode weights in the loss', weightList)
    .option('--no-self-distill', 'train each mode on its own InfoNCE only (no distillation from the combined score)')
    .option('--heads <list>', 'heads to train: sparse,colbert', 'sparse,colbert')
    .option('--max-query-length <n>', 'query truncation in tokens', positiveInt)
    .option('--max-passage-length <n>', 'passage truncation in tokens', positiveInt)
    .option('--checkpoint-every <n>', 'steps between checkpoints (0: epoch ends and Ctrl-C only)', nonNegativeInt, 500)
    .option('--resume', 'continue the interrupted run whose checkpoint is in the work directory')
    .option('--force', 'replace an existing output directory; discard an old checkpoint when not resuming')
    .option('--copy-encoder', "copy the encoder's files instead of hard-linking them")
    .option('--work-dir <dir>', 'hidden-state cache and checkpoints (default: OUT.partial)')
    .option('--keep-work-dir', 'keep the hidden-state cache after success')
    .option('-t, --threads <n>', 'ONNX Runtime threads for encoding', positiveInt)
    .option('--train-threads <n>', 'threads for the training steps (default: all cores)', positiveInt)
    .option('--json', 'JSON lines of progress on stdout instead of a progress bar')
    .action(runFinetune);
}

async function runFinetune(opts: OptionValues): Promise<void> {
  const heads = headsOf(opts.heads);
  const interrupt = interruptOnSignals();
  const report = finetuneReporter(!!opts.json);
  try {
    const result = await finetuneHeads({
      model: opts.model, data: opts.data, out: opts.out, epochs: opts.epochs, lr: opts.lr, weightDecay: opts.weightDecay,
      groupSize: opts.groupSize, batchSize: opts.batchSize, seed: opts.seed, temperature: opts.temperature,
      weights: opts.lossWeights, selfDistill: opts.selfDistill, trainSparse: heads.includes('sparse'), trainColbert: heads.includes('colbert'),
      maxQueryLength: opts.maxQueryLength, maxPassageLength: opts.maxPassageLength, checkpointEvery: opts.checkpointEvery,
      resume: !!opts.resume, force: !!opts.force, encoderFiles: opts.copyEncoder ? 'copy' : 'link', workDir: opts.workDir,
      keepWorkDir: !!opts.keepWorkDir, threads: opts.trainThreads, load: loadOptions(opts),
      signal: interrupt.signal, onProgress: report.event,
    });
    report.stop();
    printResult(result, !!opts.json);
  } catch (err) {
    report.stop();
    if ((err as { code?: string }).code === 'ERR_ABORTED') {
      process.stderr.write(`bge-m3 finetune-heads: ${(err as Error).message}\n`);
      process.exitCode = 130;
      return;
    }
    throw err;
  } finally {
    interrupt.release();
  }
}

/** --heads: sparse, colbert or both. */
function headsOf(list: unknown): string[] {
  const heads = String(list).split(',').map((h) => h.trim()).filter(Boolean);
  const unknown = heads.filter((h) => h !== 'sparse' && h !== 'colbert');
  if (unknown.length > 0 || heads.length === 0) throw new M3Error('ERR_INPUT', `--heads takes sparse, colbert or sparse,colbert, not '${list}'`);
  return heads;
}

/** A signal that SIGINT or SIGTERM fires (a second one exits at once, without a checkpoint); release() stops listening. */
function interruptOnSignals(): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: string) => {
    if (++interrupts > 1) {
      process.stderr.write(`bge-m3 finetune-heads: ${signal} again, exiting without a checkpoint\n`);
      process.exit(130);
    }
    process.stderr.write(`\nbge-m3 finetune-heads: ${signal}: finishing the current step and saving a checkpoint\n`);
    controller.abort();
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    signal: controller.signal,
    release: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    },
  };
}

function printResult(result: FinetuneResult, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify({ phase: 'result', ...result })}\n`);
    return;
  }
  const l = result.lastEpoch;
  process.stdout.write(`Wrote ${result.out}: ${result.steps} steps, ${result.epochs} epoch(s); last epoch's mean loss ${l.loss.toFixed(4)} ` +
    `(dense ${l.dense.toFixed(3)}, lex ${l.lex.toFixed(3)}, colbert ${l.colbert.toFixed(3)}); ` +
    `${result.examplesPerSecond.toFixed(1)} examples/s training, ${result.encodedTexts} texts encoded in ${result.encodeSeconds.toFixed(1)} s\n`);
}
