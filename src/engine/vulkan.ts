// What WebGPU needs on Linux, for a start-up error that names what is missing: onnxruntime-node's WebGPU provider is
// Dawn over Vulkan, which needs the Vulkan loader (libvulkan.so.1) and a driver manifest (ICD) for the GPU.

import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';

const LOADER_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'];
// The Vulkan loader's search path for driver manifests (KhronosGroup/Vulkan-Loader, docs/LoaderDriverInterface.md).
const ICD_DIRS = ['/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/etc/vulkan/icd.d'];

/** Driver manifests the loader would read: VK_DRIVER_FILES / VK_ICD_FILENAMES when set, else the standard folders. */
export function vulkanDrivers(env: NodeJS.ProcessEnv = process.env): string[] {
  const named = env.VK_DRIVER_FILES || env.VK_ICD_FILENAMES;
  if (named) return named.split(':').filter((file) => file !== '' && existsSync(file));
  return ICD_DIRS.flatMap((dir) => {
    try {
      return readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => path.join(dir, f));
    } catch {
      return [];
    }
  });
}

/**
 * GPU device nodes: DRM render nodes (/dev/dri/renderD*, what Mesa's hardware drivers open) and NVIDIA's
 * (/dev/nvidia0...). Driver manifests are no sign of a GPU (Mesa installs its radeon, intel and lavapipe manifests
 * together); without a device node the only adapter WebGPU can get is lavapipe, Mesa's Vulkan on the CPU.
 */
export function gpuDeviceNodes(devDir = '/dev'): string[] {
  const list = (dir: string, pattern: RegExp) => {
    try {
      return readdirSync(dir).filter((name) => pattern.test(name)).map((name) => path.join(dir, name));
    } catch {
      return [];
    }
  };
  return [...list(path.join(devDir, 'dri'), /^renderD\d+$/), ...list(devDir, /^nvidia\d+$/)];
}

/**
 * Why WebGPU cannot find an adapter, in words, or null when a loader and a driver are there. With hardwareOnly, an
 * adapter on the CPU (lavapipe) does not count: there must be a GPU device node.
 */
export function vulkanProblem(options: { hardwareOnly?: boolean; devDir?: string } = {}, env: NodeJS.ProcessEnv = process.env): string | null {
  if (!LOADER_DIRS.some((dir) => existsSync(path.join(dir, 'libvulkan.so.1')))) {
    return 'no Vulkan loader (libvulkan.so.1; Debian package libvulkan1)';
  }
  const drivers = vulkanDrivers(env);
  if (drivers.length === 0) {
    return `no Vulkan driver (no ICD manifest in ${ICD_DIRS.join(', ')}; an NVIDIA driver with its Vulkan ICD, or Mesa's mesa-vulkan-drivers)`;
  }
  if (options.hardwareOnly && gpuDeviceNodes(options.devDir).length === 0) {
    return 'no GPU device (/dev/dri/renderD*, /dev/nvidia*): only a software adapter (lavapipe), slower than the CPU provider';
  }
  return null;
}
