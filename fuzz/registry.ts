/** The fuzz targets, by name; a run cycles through TARGET_NAMES (selftest only checks the driver, and runs only when named). */
import type { Target } from './target';
import { modelDirTarget } from './targets/model-dir';
import { indexDirTarget } from './targets/index-dir';
import { httpTarget } from './targets/http';
import { wireTarget } from './targets/wire';
import { selftestTarget } from './targets/selftest';

export const TARGETS: Readonly<Record<string, Target>> = {
  'model-dir': modelDirTarget,
  'index-dir': indexDirTarget,
  http: httpTarget,
  wire: wireTarget,
  selftest: selftestTarget,
};

export const TARGET_NAMES = ['model-dir', 'index-dir', 'http', 'wire'];
