// User errors on the command line: one clear message naming the fix, a non-zero exit, nothing overwritten.
package dev.biflow.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.*;

class CliErrorsTest {
    record Run(int code, String out, String err) {}

    static Run run(String... args) {
        PrintStream o = System.out, e = System.err;
        ByteArrayOutputStream bo = new ByteArrayOutputStream(), be = new ByteArrayOutputStream();
        System.setOut(new PrintStream(bo));
        System.setErr(new PrintStream(be));
        try {
            int code = Main.execute(args);
            // the Jazzer agent, installed in this JVM by the fuzz tests, reports on stderr each class it instruments as it
            // loads ("INFO: Instrumented dev.biflow.cli.SamplerEval ..."): not the command's output, and the first command
            // that loads a class after a fuzz test ran would otherwise fail the one-line-error checks
            String err = be.toString().lines().filter(l -> !l.startsWith("INFO: Instrumented ")).map(l -> l + "\n")
                    .collect(java.util.stream.Collectors.joining());
            return new Run(code, bo.toString(), err);
        } finally {
            System.setOut(o);
            System.setErr(e);
        }
    }

    @Test
    void missingDatasetNamesThePackage(@TempDir Path tmp) {
        Run r = run("train-forward", "--data", tmp.resolve("nowhere").toString(), "--runs", tmp.toString(), "--steps", "1");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("apt-get install dataset-fashion-mnist"), r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line, no stack trace: " + r.err());
    }

    @Test
    void corruptCheckpointIsAClearError(@TempDir Path tmp) throws Exception {
        Path bad = tmp.resolve("bad.safetensors");
        Files.write(bad, new byte[]{1, 2, 3});
        byte[] before = Files.readAllBytes(bad);
        Run r = run("sample", "--model", bad.toString(), "--out", tmp.resolve("s.png").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("bad.safetensors"), r.err());
        assertArrayEquals(before, Files.readAllBytes(bad));
        assertFalse(Files.exists(tmp.resolve("s.png")), "no output on failure");
        Run info = run("info", bad.toString());
        assertEquals(2, info.code());
    }

    @Test
    void missingCheckpointSaysHowToMakeOne(@TempDir Path tmp) {
        Run r = run("eval", "--model", tmp.resolve("none.safetensors").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("train-forward"), r.err());
    }

    @Test
    void benchNamesAnUnknownDeviceBeforeTimingAnything() {
        Run r = run("bench", "--device", "gpu", "--what", "biflow", "--patches", "4", "--threads-list", "1");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("unknown device 'gpu'") && r.err().contains("opencl:N"), r.err());
        assertFalse(r.out().contains("ms/img"), "nothing timed: " + r.out());
    }

    @Test
    void badFlagValueIsRejectedByTheParser() {
        Run r = run("train-forward", "--steps", "many");
        assertNotEquals(0, r.code());
        assertTrue(r.err().contains("--steps"), r.err());
    }

    @Test
    void everyCommandHasHelpWithExamples() {
        for (String c : new String[]{"train-forward", "train-backward", "train-features", "sample", "eval", "flow", "info", "bench", "report", "demo", "devices", "ablate"}) {
            Run r = run(c, "--help");
            assertEquals(0, r.code(), c);
            assertTrue(r.out().contains("Usage: biflow " + c), c + ": " + r.out());
        }
    }
}
