/**
 * The training loop of fine-tuning: epochs of planned steps on the native trainer, with progress
 * events, checkpoints every `checkpointEvery` steps and at epoch ends, and on interrupt a
 * checkpoint that resume continues from the very next step.
 */
import type { NativeHeadTrainer } from '../addon/native';
import { M3Error, fromNative } from '../base/errors';
import { checkpointState, saveCheckpoint, type Checkpoint, type RunIdentity } from './checkpoint';
import type { Config, FinetuneEvent, StepLosses } from './options';
import { planEpoch, type Example } from './sampling';
import { nativeLossOptions } from './train';

/** Where the loop starts and what it reports to. */
export interface LoopSettings {
  run: RunIdentity & { config: Config };
  epochs: number;
  checkpointEvery: number;
  workDir: string;
  signal?: AbortSignal;
  emit: (event: FinetuneEvent) => void;
  /** The checkpoint resumed, if any: the loop goes on from its step. */
  from?: Checkpoint;
}

/** What the loop did. */
export interface LoopResult {
  steps: number;
  /** Rows processed by this call's steps. */
  examples: number;
  /** Mean losses of the last epoch's steps run by this call (none when it ran no step). */
  lastEpoch?: StepLosses;
  trainSeconds: number;
  examplesPerSecond: number;
}

export const ZERO_LOSSES: StepLosses = { loss: 0, dense: 0, lex: 0, colbert: 0, inter: 0, distillDense: 0, distillLex: 0, distillColbert: 0 };

function meanLosses(list: StepLosses[]): StepLosses {
  const out: StepLosses = { ...ZERO_LOSSES };
  for (const l of list) for (const k of Object.keys(out) as (keyof StepLosses)[]) out[k] += l[k] / list.length;
  return out;
}

/**
 * Runs the remaining steps of every epoch on `trainer`, then saves a final checkpoint (kept until
 * the output is in place: if writing it fails, resume writes it without training again).
 */
export async function trainEpochs(trainer: NativeHeadTrainer, examples: readonly Example[], s: LoopSettings): Promise<LoopResult> {
  const { config } = s.run;
  const stepOptions = {
    ...nativeLossOptions(config), trainSparse: config.trainSparse, trainColbert: config.trainColbert,
    lr: config.lr, weightDecay: config.weightDecay, update: true,
  };
  const totalSteps = Math.ceil(examples.length / config.batchSize) * s.epochs;
  let stepInEpoch = s.from?.state.stepInEpoch ?? 0;
  let globalStep = s.from?.state.globalStep ?? 0;
  const save = (epoch: number, at: number) => saveCheckpoint(s.workDir, trainer, checkpointState(s.run, epoch, at, globalStep));
  let processed = 0;
  let lastEpoch: StepLosses | undefined;
  const trainStart = performance.now();
  let trainMs = 0;
  for (let epoch = s.from?.state.epoch ?? 0; epoch < s.epochs; epoch++, stepInEpoch = 0) {
    const plan = planEpoch(examples, config, epoch);
    const epochLosses: StepLosses[] = [];
    for (; stepInEpoch < plan.length; stepInEpoch++) {
      if (s.signal?.aborted) {
        const dir = save(epoch, stepInEpoch);
        s.emit({ phase: 'checkpoint', step: globalStep, dir });
        throw new M3Error('ERR_ABORTED', `fine-tuning was interrupted at step ${globalStep} of ${totalSteps}; ` +
          `the checkpoint in '${dir}' continues it with resume (--resume) and the same settings`);
      }
      const step = plan[stepInEpoch];
      const t0 = performance.now();
      const { losses, gradNorm } = await trainStep(trainer, step.queries, step.passages, step.target, stepOptions, globalStep, config.lr);
      trainMs += performance.now() - t0;
      globalStep++;
      processed += step.queries.length;
      epochLosses.push(losses);
      s.emit({ phase: 'train', epoch, epochs: s.epochs, step: globalStep, steps: totalSteps, examples: processed, losses,
        gradNorm, examplesPerSecond: processed / Math.max(trainMs / 1000, 1e-9) });
      if (s.checkpointEvery > 0 && globalStep % s.checkpointEvery === 0 && stepInEpoch + 1 < plan.length) {
        s.emit({ phase: 'checkpoint', step: globalStep, dir: save(epoch, stepInEpoch + 1) });
      }
    }
    if (epochLosses.length > 0) lastEpoch = meanLosses(epochLosses);
    if (epoch + 1 < s.epochs) s.emit({ phase: 'checkpoint', step: globalStep, dir: save(epoch + 1, 0) });
  }
  const trainSeconds = (performance.now() - trainStart) / 1000;
  save(s.epochs, 0);
  return {
    steps: globalStep, examples: processed, lastEpoch, trainSeconds,
    examplesPerSecond: processed / Math.max(trainMs / 1000, 1e-9),
  };
}

/** One update of the heads; its losses (and gradient norm). A loss that is not finite stops training. */
async function trainStep(trainer: NativeHeadTrainer, queries: Int32Array, passages: Int32Array, target: Int32Array,
  options: Record<string, number | boolean>, globalStep: number, lr: number): Promise<{ losses: StepLosses; gradNorm: number }> {
  let r;
  try {
    r = await trainer.step(queries, passages, target, options);
  } catch (err) {
    throw fromNative(err);
  }
  if (!Number.isFinite(r.loss)) {
    throw new M3Error('ERR_RUNTIME', `the loss became ${r.loss} at step ${globalStep}; lower the learning rate (lr, now ${lr})`);
  }
  const losses: StepLosses = { loss: r.loss, dense: r.dense, lex: r.lex, colbert: r.colbert, inter: r.inter,
    distillDense: r.distillDense, distillLex: r.distillLex, distillColbert: r.distillColbert };
  return { losses, gradNorm: r.gradNorm };
}
