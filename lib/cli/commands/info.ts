/** `bge-m3 info`: ONNX Runtime, CPU features and kernel tier, the CUDA kernels, and the model. */
import type { Command } from 'commander';
import { capabilities, runtimeInfo } from '../../engine/runtime';
import { cudaInfo } from '../../scoring/maxsim';
import { addModelFlags, withModel } from '../args';

export function registerInfo(program: Command): void {
  addModelFlags(program.command('info')
    .description('ONNX Runtime version and providers, CPU features and kernel tier, and the model layout'))
    .action(async (opts) => {
      const runtime = runtimeInfo();
      const report: Record<string, unknown> = {
        version: runtime.version,
        node: process.version,
        onnxruntime: { version: runtime.ortVersion, providers: runtime.providers, usableProviders: runtime.usableProviders,
          libraryDir: runtime.ortLibraryDir, cudaProviderLibrariesMissing: runtime.cudaMissing,
          cudaProvider: runtime.cudaProviderError ? { loads: false, why: runtime.cudaProviderError } : { loads: true } },
        cpu: capabilities(),
        cudaKernels: (({ built, devices, why, names }) => ({ built, devices: names, ...(devices === 0 ? { unavailable: why } : {}) }))(cudaInfo()),
      };
      await withModel(opts, async (model) => {
        report.model = { ...model.info(), demo: !opts.model };
      });
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    });
}
