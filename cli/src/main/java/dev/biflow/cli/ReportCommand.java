// biflow report: (re)build a run folder's curves.png and self-contained report.html.
package dev.biflow.cli;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "report", mixinStandardHelpOptions = true,
        description = "Rebuild curves.png and report.html of a run folder from its metrics.jsonl and images.",
        footer = {"", "Example:", "  biflow report runs/forward --command \"biflow train-forward ...\""})
final class ReportCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "A run folder.") Path dir;
    @Option(names = "--command", description = "The command that made the run, shown in the report.") String command = "(not recorded)";

    @Override
    public Integer call() throws Exception {
        if (!Files.isDirectory(dir)) throw new IllegalArgumentException(dir + " is not a run folder");
        Map<String, List<double[]>> s = RunReport.series(dir.resolve("metrics.jsonl"));
        Map<String, String> summary = new LinkedHashMap<>();
        s.forEach((k, v) -> {
            double[] last = v.get(v.size() - 1);
            summary.put(k + " (last)", String.format(Locale.ROOT, "%.5g at step %d", last[1], (long) last[0]));
        });
        Path out = RunReport.write(dir, "run " + dir.getFileName(), command, summary);
        System.out.println("report: " + out);
        return 0;
    }
}
