// Fuzzes the CLI's option parsing: any argument list parses and passes the range checks, or is refused in one line.
package dev.biflow.cli;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Everything {@link Main#execute} does before a command runs: the config-file hook, picocli's
 * parse, the finiteness and @Range checks of every numeric option, and the label list of
 * sample. Commands are not run (no files are written). Allowed outcomes: success, picocli's
 * ParameterException, an OptionCheck problem, an IllegalArgumentException from --labels, or
 * install's one-line refusal. A normal {@code mvn test} replays {@code OptionsFuzzTestInputs/parse/}.
 */
class OptionsFuzzTest {
    private static final String[] COMMANDS = {"train-forward", "train-backward", "train-features", "eval", "sample", "flow", "info",
            "devices", "report", "bench", "demo", "export", "help"};

    @FuzzTest(maxDuration = "2m")
    @DictionaryEntries({"--n", "--batch", "--labels", "--guidance", "--temperature", "--threads", "--steps", "--lr", "--sigma", "--width",
            "--head-dim", "--beta2", "--config", "--resume", "--samples", "--nrow", "--eval-images", "--checkpoint-every", "--max-bad-steps",
            "--device", "--seed", "--w", "--ema", "--patch", "--blocks", "NaN", "Infinity", "-1", "0", "1e9", "2147483648", "all", "none",
            "--help", "--version", "="})
    void parse(FuzzedDataProvider data) {
        List<String> args = new ArrayList<>();
        if (data.consumeBoolean()) args.add(COMMANDS[data.consumeInt(0, COMMANDS.length - 1)]);
        int n = data.consumeInt(0, 12);
        for (int i = 0; i < n; i++) args.add(data.consumeString(40));
        String[] a = args.toArray(String[]::new);
        CommandLine cl = Main.commandLine();
        StringWriter err = new StringWriter();
        cl.setErr(new PrintWriter(err));
        cl.setOut(new PrintWriter(new StringWriter()));
        int rc = ConfigFile.install(cl, a);
        if (rc != 0) {
            assertEquals(2, rc);
            return;
        }
        CommandLine.ParseResult pr;
        try {
            pr = cl.parseArgs(a);
        } catch (CommandLine.ParameterException e) {
            assertNotNull(e.getMessage());
            return;
        }
        CommandLine.ParseResult leaf = pr;
        while (leaf.subcommand() != null) leaf = leaf.subcommand();
        String problem = OptionCheck.check(leaf.commandSpec());
        if (problem != null) {
            assertTrue(problem.startsWith("--"), problem);
            return;
        }
        if (leaf.commandSpec().userObject() instanceof SampleCommand s) {
            try {
                Common.labels(s.labels, 0, Math.min(s.n, 64), 10);
                Common.labels(s.labels, Integer.MAX_VALUE - 5L, 16, 10);
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage().startsWith("--labels"), e.getMessage());
            }
        }
    }
}
