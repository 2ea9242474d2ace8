// OpenCL platform/device discovery and the --device selection: "cpu" | "opencl" | "opencl:N".
package dev.biflow.gpu;

import com.aparapi.device.Device;
import com.aparapi.device.OpenCLDevice;
import com.aparapi.internal.opencl.OpenCLLoader;
import com.aparapi.internal.opencl.OpenCLPlatform;
import dev.biflow.engine.Backend;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * Lists OpenCL devices (index N counts across platforms in the order the ICD loader reports them)
 * and turns a device spec into a {@link Backend}:
 * <ul>
 * <li>{@code cpu}: {@link Backend#CPU}, the Vector API kernels;</li>
 * <li>{@code opencl}: the first GPU, else the first accelerator, else the first OpenCL device;</li>
 * <li>{@code opencl:N}: device N of {@link #list()}.</li>
 * </ul>
 * An OpenCL spec that cannot be honoured throws {@link OpenClUnavailableException}; it never
 * returns the CPU backend instead.
 */
public final class Devices {
    private Devices() {}

    /** One OpenCL device and its limits. */
    public record Info(int index, String platform, String platformVersion, String name, String type,
                       int computeUnits, long globalMemBytes, long localMemBytes, long maxAllocBytes,
                       int maxWorkGroupSize, int[] maxWorkItemSizes, OpenCLDevice device) {
        @Override public String toString() {
            return String.format(Locale.ROOT, "opencl:%d  %-4s %s  [%s]  compute units %d, global %.0f MiB (max alloc %.0f MiB), "
                            + "local %d KiB, work-group <= %d, work-items <= %s",
                    index, type, name, platform, computeUnits, globalMemBytes / 1048576.0, maxAllocBytes / 1048576.0,
                    localMemBytes / 1024, maxWorkGroupSize, Arrays.toString(maxWorkItemSizes));
        }
    }

    /**
     * Every OpenCL device, or an empty list when the loader works but reports none.
     *
     * @throws OpenClUnavailableException when Aparapi's native library or the OpenCL ICD loader
     *                                    (libOpenCL.so.1) cannot be loaded
     */
    public static List<Info> list() {
        List<OpenCLPlatform> platforms;
        try {
            if (!OpenCLLoader.isOpenCLAvailable())
                throw new OpenClUnavailableException(OpenClUnavailableException.Reason.NO_OPENCL, "Aparapi could not load OpenCL: the ICD loader libOpenCL.so.1 or "
                        + "Aparapi's native library failed to load (see the warning above for the reason)");
            platforms = OpenCLPlatform.getUncachedOpenCLPlatforms();
        } catch (OpenClUnavailableException e) {
            throw e;
        } catch (LinkageError | RuntimeException e) {
            throw new OpenClUnavailableException(OpenClUnavailableException.Reason.NO_OPENCL, "OpenCL could not be initialised (" + e + ")", e);
        }
        List<Info> out = new ArrayList<>();
        for (OpenCLPlatform p : platforms) {
            for (OpenCLDevice d : p.getOpenCLDevices()) {
                out.add(new Info(out.size(), p.getName() + " " + p.getVendor(), p.getVersion(), d.getName(),
                        String.valueOf(d.getType()), d.getMaxComputeUnits(), d.getGlobalMemSize(), d.getLocalMemSize(),
                        d.getMaxMemAllocSize(), d.getMaxWorkGroupSize(), d.getMaxWorkItemSize().clone(), d));
            }
        }
        return out;
    }

    /** The device a spec "opencl" or "opencl:N" names. */
    public static Info select(String spec) {
        String s = spec == null ? "" : spec.trim().toLowerCase(Locale.ROOT);
        if (!s.equals("opencl") && !s.startsWith("opencl:"))
            throw new IllegalArgumentException("device spec '" + spec + "' is not an OpenCL device: use opencl or opencl:N");
        List<Info> all = list();
        if (all.isEmpty())
            throw new OpenClUnavailableException(OpenClUnavailableException.Reason.NO_DEVICE, "--device " + spec + " was requested but the OpenCL loader reports no "
                    + "platform with a device (no ICD file in /etc/OpenCL/vendors, or its driver library is missing)");
        if (s.equals("opencl")) {
            for (Info i : all) if (i.device.getType() == Device.TYPE.GPU) return i;
            for (Info i : all) if (i.device.getType() == Device.TYPE.ACC) return i;
            return all.get(0);
        }
        int n;
        try {
            n = Integer.parseInt(s.substring("opencl:".length()));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("device spec '" + spec + "': N in opencl:N must be a device index, e.g. opencl:0");
        }
        if (n < 0 || n >= all.size())
            throw new OpenClUnavailableException(OpenClUnavailableException.Reason.BAD_INDEX, "--device " + spec + " was requested but there "
                    + (all.size() == 1 ? "is 1 OpenCL device (opencl:0)" : "are " + all.size() + " OpenCL devices (opencl:0.."
                    + (all.size() - 1) + ")") + ": " + all.get(0).name + (all.size() > 1 ? ", ..." : ""));
        return all.get(n);
    }

    /**
     * The backend for a --device spec: "cpu" gives {@link Backend#CPU}; "opencl[:N]" a warmed-up
     * {@link OpenClBackend} (its kernels are compiled and checked to run on the device).
     */
    public static Backend backend(String spec) {
        String s = spec == null ? "cpu" : spec.trim().toLowerCase(Locale.ROOT);
        if (s.equals("cpu")) return Backend.CPU;
        if (s.equals("opencl") || s.startsWith("opencl:")) return new OpenClBackend(select(s));
        throw new IllegalArgumentException("unknown device '" + spec + "': use cpu, opencl or opencl:N");
    }

    /** The text `biflow devices` prints: every OpenCL device with its limits, or why there is none. */
    public static String describe() {
        StringBuilder sb = new StringBuilder();
        sb.append("cpu       Vector API kernels on ").append(Runtime.getRuntime().availableProcessors())
                .append(" threads (always available)\n");
        try {
            List<Info> all = list();
            if (all.isEmpty()) sb.append("no OpenCL device: the loader reports no platform with a device. ")
                    .append(OpenClUnavailableException.HOW_TO_INSTALL).append('\n');
            String lastPlatform = null;
            for (Info i : all) {
                if (!i.platform.equals(lastPlatform)) {
                    sb.append("platform: ").append(i.platform).append(" (").append(i.platformVersion).append(")\n");
                    lastPlatform = i.platform;
                }
                sb.append("  ").append(i).append('\n');
            }
        } catch (OpenClUnavailableException e) {
            sb.append("no OpenCL: ").append(e.getMessage()).append('\n');
        }
        return sb.toString();
    }

    /** Prints {@link #describe()}; exit status 0 when at least one OpenCL device exists, else 2. */
    public static void main(String[] args) {
        System.out.print(describe());
        boolean any;
        try {
            any = !list().isEmpty();
        } catch (OpenClUnavailableException e) {
            any = false;
        }
        System.exit(any ? 0 : 2);
    }
}
