/** The progress of `bge-m3 finetune-heads`: a bar with the running losses on a terminal, or JSON lines. */
import { SingleBar } from 'cli-progress';
import type { FinetuneEvent } from '../training/options';

/** Progress of finetune-heads: a bar with the running losses on a terminal, or JSON lines. */
export function finetuneReporter(json: boolean): { event: (e: FinetuneEvent) => void; stop: () => void } {
  if (json) return { event: (e) => process.stdout.write(`${JSON.stringify(e)}\n`), stop: () => {} };
  if (!process.stderr.isTTY) return { event: () => {}, stop: () => {} };
  let bar: SingleBar | undefined;
  let phase = '';
  let recent: number[][] = [];
  const stop = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    stop,
    event: (e) => {
      if (e.phase === 'encode' || e.phase === 'train') {
        if (phase !== e.phase) {
          stop();
          phase = e.phase;
          bar = new SingleBar({
            format: e.phase === 'encode' ? 'encoding {bar} {value}/{total} texts'
              : 'training {bar} step {value}/{total} | epoch {epoch} | loss {loss} (dense {dense} lex {lex} colbert {colbert}) | {rate} ex/s',
            stream: process.stderr, hideCursor: true,
          });
          bar.start(e.phase === 'encode' ? e.total : e.steps, 0,
            { epoch: e.phase === 'train' ? `${e.epoch + 1}/${e.epochs}` : '', loss: '-', dense: '-', lex: '-', colbert: '-', rate: '0' });
        }
        if (e.phase === 'encode') bar!.update(e.done);
        else {
          // Means over the last 20 steps: single steps are noisy.
          recent = [...recent.slice(-19), [e.losses.loss, e.losses.dense, e.losses.lex, e.losses.colbert]];
          const mean = (k: number) => (recent.reduce((s, r) => s + r[k], 0) / recent.length).toFixed(3);
          bar!.update(e.step, { epoch: `${e.epoch + 1}/${e.epochs}`, loss: mean(0), dense: mean(1), lex: mean(2), colbert: mean(3),
            rate: e.examplesPerSecond.toFixed(1) });
        }
      } else if (e.phase === 'checkpoint') {
        bar?.update({});
      }
    },
  };
}
