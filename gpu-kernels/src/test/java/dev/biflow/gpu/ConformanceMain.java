// Runs the conformance suite without Maven (bench/gpu-check.sh): JUnit's launcher, a summary, exit 0 only when all pass.
package dev.biflow.gpu;

import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;

import java.io.PrintWriter;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;

/** Usage: ConformanceMain [opencl[:N]]; sets -Dbiflow.test.device and runs the gpu-kernels test classes. */
public final class ConformanceMain {
    public static void main(String[] args) {
        if (args.length > 0) System.setProperty("biflow.test.device", args[0]);
        var request = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectClass(BackendConformanceTest.class), selectClass(AttentionBackwardConformanceTest.class),
                        selectClass(OpenClBackendTest.class)).build();
        Launcher launcher = LauncherFactory.create();
        SummaryGeneratingListener summary = new SummaryGeneratingListener();
        launcher.execute(request, summary);
        PrintWriter w = new PrintWriter(System.out, true);
        summary.getSummary().printFailuresTo(w, 20);
        summary.getSummary().printTo(w);
        var s = summary.getSummary();
        boolean ok = s.getTotalFailureCount() == 0 && s.getTestsSkippedCount() == 0 && s.getTestsAbortedCount() == 0
                && s.getTestsSucceededCount() > 0;
        System.out.println(ok ? "CONFORMANCE: PASS" : "CONFORMANCE: FAIL (failures, or OpenCL tests skipped/aborted: no device)");
        System.exit(ok ? 0 : 1);
    }
}
