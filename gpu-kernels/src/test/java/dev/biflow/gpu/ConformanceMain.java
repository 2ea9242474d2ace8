// Runs the conformance suite without Maven (bench/gpu-check.sh): JUnit's launcher, a summary, exit 0 only when all pass.
package dev.biflow.gpu;

import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;

import java.io.PrintWriter;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectMethod;

/**
 * Usage: ConformanceMain [opencl[:N]] [test classes or Class#method...]; sets -Dbiflow.test.device and runs the gpu-kernels test
 * classes (all of the suite, or only the named ones, e.g. dev.biflow.gpu.ResidentStackTest or
 * dev.biflow.gpu.ResidentStackTest#badInputNamesExpectedAndActualShape).
 */
public final class ConformanceMain {
    public static void main(String[] args) {
        if (args.length > 0) System.setProperty("biflow.test.device", args[0]);
        var builder = LauncherDiscoveryRequestBuilder.request();
        if (args.length > 1)
            for (int i = 1; i < args.length; i++) builder.selectors(args[i].contains("#") ? selectMethod(args[i]) : selectClass(args[i]));
        else builder.selectors(selectClass(BackendConformanceTest.class), selectClass(AttentionBackwardConformanceTest.class),
                selectClass(OpenClBackendTest.class), selectClass(ResidentStackTest.class));
        var request = builder.build();
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
