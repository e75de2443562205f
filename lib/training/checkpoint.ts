/**
 * Fine-tuning's checkpoints in the work directory: the trainer's parameters and Adam moments
 * (trainer.safetensors) and where training stands (state.json). A save writes `checkpoint.tmp/`
 * and swaps it in for `checkpoint/`; a save cut off between the swap's two renames leaves the
 * previous one at `checkpoint.old/`, which is read then.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, type NativeHeadTrainer } from '../addon/native';
import { M3Error, fromNative } from '../base/errors';
import { readRegularFile, writeFileSynced } from '../base/files';
import { swapDirectory } from './directories';
import type { Config } from './options';
import { writeSafetensors } from './safetensors';

const CHECKPOINT_VERSION = 1;

export interface CheckpointState {
  version: number;
  config: Config;
  dataHash: string;
  model: string;
  /** Where training resumes: epoch (0-based) and step within it. */
  epoch: number;
  stepInEpoch: number;
  globalStep: number;
  adamSteps: number;
}

/** A checkpoint read back: its state and the trainer's arrays. */
export interface Checkpoint {
  state: CheckpointState;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** What a run is, for its checkpoints: they resume only the same settings, data and model. */
export interface RunIdentity {
  config: Config;
  dataHash: string;
  model: string;
}

/** The state of a checkpoint that continues at step `stepInEpoch` of `epoch` (adamSteps is the trainer's, filled in by save). */
export function checkpointState(run: RunIdentity, epoch: number, stepInEpoch: number, globalStep: number): CheckpointState {
  return { version: CHECKPOINT_VERSION, ...run, epoch, stepInEpoch, globalStep, adamSteps: 0 };
}

/** Saves the trainer's state as the work directory's checkpoint; returns its directory. */
export function saveCheckpoint(workDir: string, trainer: NativeHeadTrainer, state: CheckpointState): string {
  const dir = path.join(workDir, 'checkpoint');
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const s = trainer.state();
  writeSafetensors(path.join(tmp, 'trainer.safetensors'), {
    params: { shape: [s.params.length], data: s.params }, m: { shape: [s.m.length], data: s.m }, v: { shape: [s.v.length], data: s.v },
  });
  writeFileSynced(path.join(tmp, 'state.json'), JSON.stringify({ ...state, adamSteps: s.t }, null, 2));
  swapDirectory(tmp, dir, `${dir}.old`);  // loadCheckpoint falls back to checkpoint.old
  return dir;
}

/** Removes every checkpoint of the work directory (current, previous and half-written). */
export function removeCheckpoints(workDir: string): void {
  for (const name of ['checkpoint', 'checkpoint.old', 'checkpoint.tmp']) fs.rmSync(path.join(workDir, name), { recursive: true, force: true });
}

/**
 * The work directory's checkpoint: `checkpoint/`, or `checkpoint.old/` when a save was cut off
 * between its two renames. A checkpoint that cannot be read is an ERR_INPUT naming it.
 */
function loadCheckpoint(workDir: string): Checkpoint | undefined {
  const dir = [path.join(workDir, 'checkpoint'), path.join(workDir, 'checkpoint.old')]
    .find((d) => fs.existsSync(path.join(d, 'state.json')));
  if (!dir) return undefined;
  const unreadable = (why: string) => new M3Error('ERR_INPUT', `the checkpoint in '${dir}' cannot be used (${why}); ` +
    'pass force (--force) without resume to start over');
  let state: CheckpointState;
  try {
    state = JSON.parse(readRegularFile(path.join(dir, 'state.json'), 'Checkpoint file').toString('utf8')) as CheckpointState;
  } catch (err) {
    throw unreadable(`state.json: ${(err as Error).message}`);
  }
  if (!state || state.version !== CHECKPOINT_VERSION) throw unreadable(`version ${state?.version}, not ${CHECKPOINT_VERSION}`);
  let tensors;
  try {
    tensors = native().readTensorFile(path.join(dir, 'trainer.safetensors'));
  } catch (err) {
    throw unreadable(fromNative(err).message);
  }
  if (!tensors.params || !tensors.m || !tensors.v) throw unreadable('trainer.safetensors lacks params, m or v');
  return { state, params: tensors.params.data, m: tensors.m.data, v: tensors.v.data };
}

/**
 * The checkpoint a run starts from: the interrupted run's, with `resume` (which must have made it
 * with the same settings, data and model, and not be past `epochs`), or none. A checkpoint left
 * there is discarded only with `force` and without `resume`; otherwise it is an error to start over.
 */
export function checkpointToResume(workDir: string, run: RunIdentity, options: { force: boolean; resume: boolean; epochs: number }):
  Checkpoint | undefined {
  fs.rmSync(path.join(workDir, 'checkpoint.tmp'), { recursive: true, force: true });  // a save cut off midway
  if (options.force && !options.resume) removeCheckpoints(workDir);
  const checkpoint = loadCheckpoint(workDir);
  if (checkpoint && !options.resume) {
    throw new M3Error('ERR_INPUT', `'${workDir}' holds a checkpoint of an interrupted run (step ${checkpoint.state.globalStep}); ` +
      'resume it with resume (--resume), or pass force (--force) to start over');
  }
  if (options.resume && !checkpoint) throw new M3Error('ERR_INPUT', `nothing to resume: no checkpoint in '${workDir}'`);
  if (checkpoint) checkSameRun(workDir, checkpoint.state, run, options.epochs);
  return checkpoint;
}

/** Throws unless the checkpoint was made by the same settings, data and model, and is not past `epochs`. */
function checkSameRun(workDir: string, c: CheckpointState, run: RunIdentity, epochs: number): void {
  const changed: string[] = (Object.keys(run.config) as (keyof Config)[])
    .filter((k) => JSON.stringify(c.config[k]) !== JSON.stringify(run.config[k]));
  if (c.dataHash !== run.dataHash) changed.push('data');
  if (c.model !== run.model) changed.push('model');
  if (changed.length > 0) {
    throw new M3Error('ERR_INPUT', `the checkpoint in '${workDir}' was made with different ${changed.join(', ')}; ` +
      'resume with the same settings, or pass force (--force) without resume to start over');
  }
  if (c.epoch > epochs || (c.epoch === epochs && c.stepInEpoch > 0)) {
    throw new M3Error('ERR_INPUT', `the checkpoint in '${workDir}' is already in epoch ${c.epoch + 1}; ` +
      `resume with epochs >= ${c.stepInEpoch > 0 ? c.epoch + 1 : c.epoch}`);
  }
}
