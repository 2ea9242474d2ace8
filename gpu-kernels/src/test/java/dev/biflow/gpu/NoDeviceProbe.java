// Run in a child JVM with no OpenCL device visible: prints what asking for OpenCL does.
package dev.biflow.gpu;

/** Prints "reason=&lt;Reason&gt;" and the message, or "backend=&lt;name&gt;" if a backend came back. */
public final class NoDeviceProbe {
    public static void main(String[] args) {
        try {
            var be = Devices.backend(args.length > 0 ? args[0] : "opencl");
            System.out.println("backend=" + be.name());
        } catch (OpenClUnavailableException e) {
            System.out.println("reason=" + e.reason());
            System.out.println(e.getMessage());
        }
        System.out.print(Devices.describe());
    }
}
