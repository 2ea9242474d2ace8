// biflow devices: the OpenCL platforms and devices this machine offers, with their limits.
package dev.biflow.cli;

import dev.biflow.gpu.Devices;
import picocli.CommandLine.Command;

import java.util.concurrent.Callable;

@Command(name = "devices", mixinStandardHelpOptions = true,
        description = "List OpenCL platforms and devices (for --device opencl:N). CPU kernels are always available.",
        footer = {"", "Example:", "  biflow devices"})
final class DevicesCommand implements Callable<Integer> {
    @Override
    public Integer call() {
        if (Devices.list().isEmpty()) {
            System.out.println("cpu: Vector API kernels on " + dev.biflow.engine.kernels.Parallel.threads() + " threads (always available)");
            System.out.println("opencl: no device found; for an OpenCL device on the CPU run `apt-get install ocl-icd-libopencl1 pocl-opencl-icd`, "
                    + "for a GPU install its vendor driver");
            return 2;
        }
        System.out.print(Devices.describe());
        return 0;
    }
}
