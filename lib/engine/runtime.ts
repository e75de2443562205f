/** Facts about the runtime: ONNX Runtime version and providers, CPU features, the demo model. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkChoice } from '../base/validate';
import { native, PACKAGE_ROOT, type IsaTierName, type NativeCapabilities } from '../addon/native';

/** The tiny random-weight model shipped with the package (for demos and tests only). */
export const DEMO_MODEL_DIR = path.join(PACKAGE_ROOT, 'demo-model');

/** Data shipped with the package (seed-examples.jsonl: ten {query, pos, neg} rows). */
export const PACKAGE_DATA_DIR = path.join(PACKAGE_ROOT, 'data');

/** This package's version, from its package.json ('' if that cannot be read). */
export function packageVersion(): string {
  try {
    const parsed: unknown = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8'));
    const version = (parsed as { version?: unknown } | null)?.version;
    return typeof version === 'string' ? version : '';
  } catch {
    return '';
  }
}

/** What {@link runtimeInfo} reports. */
export interface RuntimeInfo {
  /** Version of the loaded ONNX Runtime library. */
  ortVersion: string;
  /** Execution providers compiled into that library. */
  providers: string[];
  /**
   * Providers that can actually be loaded here: 'CUDAExecutionProvider' only where its libraries
   * are present and load (with CUDA and cuDNN); a GPU is still needed to run it.
   */
  usableProviders: string[];
  /** Folder of the loaded libonnxruntime. */
  ortLibraryDir: string;
  /** CUDA provider libraries missing from ortLibraryDir. */
  cudaMissing: string[];
  /** Why the CUDA provider cannot be loaded ('' when it can): files missing, or ONNX Runtime's loading error. */
  cudaProviderError: string;
  hardwareThreads: number;
}

/**
 * ONNX Runtime's version and providers, as loaded by this addon. Where the CUDA provider's files
 * are present, the first call loads them (once per process) to tell whether they work.
 */
export function runtimeInfo(): RuntimeInfo {
  const info = native().runtimeInfo();
  const usable = info.providers.filter((p) => p === 'CPUExecutionProvider' ||
    (p === 'CUDAExecutionProvider' && info.cudaProviderError === ''));
  return { ...info, usableProviders: usable };
}

/** CPU features detected (from CPUID bits) and the kernel tier in use. */
export function capabilities(): NativeCapabilities {
  return native().capabilities();
}

/**
 * Forces the kernels down to a lower instruction-set tier ('serial', 'avx2' or 'avx512') for the
 * whole process, e.g. to compare tiers; a tier above the detected one is clamped to it. Returns
 * the tier now in use. The environment variable BGE_M3_ISA does the same at startup.
 */
export function setIsa(tier: IsaTierName): IsaTierName {
  return native().setIsa(checkChoice(tier, 'tier', ['serial', 'avx2', 'avx512'] as const));
}
