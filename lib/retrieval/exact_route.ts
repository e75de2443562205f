/** The exact dense route: the native index's scan over every document's inner product; nothing of its own. */
import type { DenseRoute } from './dense_route';

export class ExactRoute implements DenseRoute {
  readonly name = 'exact';
  readonly exact = true;

  add(): void {}

  candidates(): undefined {
    return undefined;
  }

  rebuild(): void {}

  restore(): void {}
}
