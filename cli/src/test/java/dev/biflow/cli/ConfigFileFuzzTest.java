// Fuzzes the settings-file reader (ConfigFile) as the CLI uses it: install, parse the command line with its defaults, check.
package dev.biflow.cli;

import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import picocli.CommandLine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.*;

/**
 * Input: one selector byte (which train command; --config or --resume) and the bytes of
 * config.json. Outcomes allowed: install refuses the file (one line, exit 2), picocli refuses a
 * value (ParameterException), an option is refused by its range (OptionCheck) or a resume is
 * refused (IllegalArgumentException); anything else is a finding. A normal {@code mvn test}
 * replays {@code ConfigFileFuzzTestInputs/read/}.
 */
class ConfigFileFuzzTest {
    private static final String[] COMMANDS = {"train-forward", "train-backward", "train-features"};
    private static Path dir;

    @FuzzTest(maxDuration = "2m")
    @DictionaryEntries({"{\"", "\":", "\"model\":{", "\"train\":{", "\"data\":", "\"steps\":", "\"lr\":", "\"batchSize\":", "\"sigma\":",
            "\"width\":", "\"blocks\":", "\"patch\":", "\"head_dim\":", "\"eval_images\":", "\"norm_control\":", "NaN", "-Infinity",
            "1e999", "null", "true", "[", "]"})
    void read(byte[] input) throws IOException {
        if (input.length < 1) return;
        if (dir == null) dir = Files.createTempDirectory("config-fuzz");
        int sel = input[0] & 0xFF;
        String command = COMMANDS[sel % COMMANDS.length];
        boolean resume = (sel / COMMANDS.length) % 2 == 1;
        Path file = dir.resolve("config.json");
        Files.write(file, java.util.Arrays.copyOfRange(input, 1, input.length));
        String[] args = resume ? new String[]{command, "--resume", dir.toString(), "--steps", "3"}
                : new String[]{command, "--config", file.toString()};
        CommandLine cl = Main.commandLine();
        StringWriter err = new StringWriter();
        cl.setErr(new PrintWriter(err));
        int rc = ConfigFile.install(cl, args);
        if (rc != 0) {
            assertEquals(2, rc);
            assertEquals(1, err.toString().strip().lines().count(), err.toString());
            return;
        }
        CommandLine.ParseResult pr;
        try {
            pr = cl.parseArgs(args);
        } catch (CommandLine.ParameterException e) {
            return; // a value of the wrong type: picocli's one-line error
        }
        CommandLine.ParseResult leaf = pr.subcommand();
        String problem = OptionCheck.check(leaf.commandSpec());
        if (problem != null) {
            assertTrue(problem.startsWith("--"), problem);
            return;
        }
        if (resume) {
            try {
                ConfigFile.forRun(leaf.commandSpec(), true, Set.of("--steps", "--checkpoint-every"), command);
            } catch (IllegalArgumentException e) {
                assertNotNull(e.getMessage());
            }
        }
    }
}
