// The error raised when OpenCL was asked for and cannot be used: nothing falls back silently.
package dev.biflow.gpu;

/**
 * Thrown when an OpenCL backend was requested but no OpenCL device can run the kernels: no ICD
 * loader or driver, no device, a bad device index, a kernel that Aparapi could not translate,
 * or a kernel that Aparapi ran on its Java thread pool instead of the device. The message says
 * what is missing and how to install it.
 */
public final class OpenClUnavailableException extends RuntimeException {
    /** How to get an OpenCL device, appended to every message. */
    public static final String HOW_TO_INSTALL =
            "To get an OpenCL device: on the CPU, install PoCL (Debian/Ubuntu: apt-get install ocl-icd-libopencl1 "
            + "pocl-opencl-icd); for a GPU, install the vendor's driver with its OpenCL ICD (NVIDIA: the driver "
            + "package ships libnvidia-opencl and /etc/OpenCL/vendors/nvidia.icd; AMD: ROCm/amdgpu OpenCL; Intel: "
            + "intel-opencl-icd). Check with `clinfo -l` or `biflow devices`, or run with --device cpu.";

    /** Why OpenCL cannot be used. */
    public enum Reason {
        /** The ICD loader or Aparapi's native library is missing. */
        NO_OPENCL,
        /** OpenCL loads but reports no device. */
        NO_DEVICE,
        /** opencl:N names a device that does not exist. */
        BAD_INDEX,
        /** A kernel did not translate or build for the device (a bug here, not a missing install). */
        KERNEL_FAILED,
        /** Aparapi ran a kernel on its Java thread pool instead of the device. */
        FELL_BACK
    }

    private final Reason reason;

    public OpenClUnavailableException(Reason reason, String what) { this(reason, what, null); }

    public OpenClUnavailableException(Reason reason, String what, Throwable cause) {
        super(what + (reason == Reason.NO_OPENCL || reason == Reason.NO_DEVICE || reason == Reason.BAD_INDEX
                ? ". " + HOW_TO_INSTALL : ". This is a kernel bug or a driver fault, not a missing install: report it, or run with --device cpu"), cause);
        this.reason = reason;
    }

    public Reason reason() { return reason; }

    /** True when the machine simply has no usable OpenCL device (tests skip; they fail on the other reasons). */
    public boolean noDevice() { return reason == Reason.NO_OPENCL || reason == Reason.NO_DEVICE; }
}
