// A checkpoint is one unit: a training process killed at every point of a checkpoint resumes bit for bit, or refuses with a clear error.
package dev.biflow.flow.train;

import dev.biflow.engine.Rng;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.TarFlow;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.*;

class CheckpointCrashTest {
    static final long STEPS = 6, EVERY = 2, CRASH_STEP = 4;
    static final List<String> FILES = List.of(ForwardTrainer.MODEL_FILE, ForwardTrainer.STATE_FILE, ForwardTrainer.EMA_FILE, RunCheckpoint.MANIFEST);

    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() {
        Parallel.setThreads(threads);
        RunCheckpoint.setFaultHook(null);
    }

    static TrainConfig cfg() {
        return ForwardTrainerTest.cfg(STEPS).withEma(0.9).withGradClip(1.0).withCheckpointEvery(EVERY);
    }

    static ForwardTrainer trainer(Path dir, long modelSeed) {
        return new ForwardTrainer(new TarFlow(ForwardTrainerTest.smallConfig(), new Rng(modelSeed)), ForwardTrainerTest.toyImages(40), cfg(), dir);
    }

    /** The child process: trains the run into args[0] (halted by the crash property, if it names a point it reaches). */
    public static void main(String[] args) throws IOException {
        Parallel.setThreads(1);
        trainer(Path.of(args[0]), 1).run(new ForwardTrainer.Listener() {});
        System.exit(0);
    }

    static int child(Path dir, String crashAt) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules", "jdk.incubator.vector", "-XX:+UseSerialGC", "-Xmx256m",
                "-cp", System.getProperty("java.class.path")));
        if (crashAt != null) cmd.add("-D" + RunCheckpoint.CRASH_PROPERTY + "=" + crashAt);
        cmd.add(CheckpointCrashTest.class.getName());
        cmd.add(dir.toString());
        Path log = Files.createTempFile("crash-child", ".log");
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            assertTrue(p.waitFor(120, TimeUnit.SECONDS), "child timed out");
            int rc = p.exitValue();
            if (rc != 0 && rc != RunCheckpoint.CRASH_STATUS) fail("child " + crashAt + " failed with " + rc + ":\n" + Files.readString(log));
            return rc;
        } finally {
            Files.deleteIfExists(log);
        }
    }

    /** Every named point of the checkpoint at CRASH_STEP, in order, recorded in this JVM. */
    static List<String> points(Path tmp) throws IOException {
        List<String> seen = new ArrayList<>();
        RunCheckpoint.setFaultHook((step, name) -> { if (step == CRASH_STEP) seen.add(name); });
        trainer(tmp.resolve("points"), 1).runUntil(CRASH_STEP, new ForwardTrainer.Listener() {});
        RunCheckpoint.setFaultHook(null);
        return seen;
    }

    @Test
    void aKillAtAnyPointOfACheckpointResumesBitForBit(@TempDir Path tmp) throws Exception {
        // the reference: an uninterrupted run in another JVM (so the bytes must not depend on the JVM run either)
        Path ref = tmp.resolve("ref");
        assertEquals(0, child(ref, null));
        List<String> points = points(tmp);
        assertEquals(3 * 3 + 3 + 3 * 2 + 1, points.size(), "stage x3, manifest x3, install x2, done for 3 parts: " + points);
        assertTrue(points.contains("stage:" + ForwardTrainer.STATE_FILE + ":half") && points.contains("install:" + ForwardTrainer.EMA_FILE + ":begin"), points.toString());
        int committedAt = points.indexOf("manifest:committed");
        for (int i = 0; i < points.size(); i++) {
            String point = points.get(i);
            Path dir = tmp.resolve("crash-" + i);
            assertEquals(RunCheckpoint.CRASH_STATUS, child(dir, CRASH_STEP + ":" + point), "the child halts at " + point);
            // a fresh process: another model's weights, resumed from the folder the killed one left
            ForwardTrainer t = trainer(dir, 99);
            t.resume(dir);
            assertEquals(i < committedAt ? EVERY : CRASH_STEP, t.step(), "resumed step after a kill at " + point);
            t.run(new ForwardTrainer.Listener() {});
            for (String f : FILES)
                assertArrayEquals(Files.readAllBytes(ref.resolve(f)), Files.readAllBytes(dir.resolve(f)), f + " after a kill at " + point);
            try (Stream<Path> s = Files.list(dir)) {
                List<String> left = s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(".")).toList();
                assertEquals(List.of(), left, "no staged or temporary files left after a kill at " + point);
            }
        }
    }

    /** A committed checkpoint whose files were then changed: the resume names the file and refuses, changing nothing. */
    @Test
    void aDamagedPartIsRefusedNamingTheFile(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("run");
        trainer(dir, 1).runUntil(CRASH_STEP, new ForwardTrainer.Listener() {});
        Path state = dir.resolve(ForwardTrainer.STATE_FILE);
        byte[] b = Files.readAllBytes(state);
        b[b.length - 1] ^= 1;
        Files.write(state, b);
        ForwardTrainer t = trainer(dir, 99);
        IOException e = assertThrows(IOException.class, () -> t.resume(dir));
        assertTrue(e.getMessage().contains(state.toString()) && e.getMessage().contains("CRC32C") && e.getMessage().contains("step 4"), e.getMessage());
        assertEquals(1, e.getMessage().lines().count());
        assertEquals(0, t.step(), "nothing restored");
        b[b.length - 1] ^= 1;
        Files.write(state, b);

        Files.delete(dir.resolve(ForwardTrainer.EMA_FILE));
        IOException missing = assertThrows(IOException.class, () -> trainer(dir, 99).resume(dir));
        assertTrue(missing.getMessage().contains(dir.resolve(ForwardTrainer.EMA_FILE) + " is missing"), missing.getMessage());

        Files.writeString(dir.resolve(RunCheckpoint.MANIFEST), "{\"format\": 1, ");
        IOException manifest = assertThrows(IOException.class, () -> trainer(dir, 99).resume(dir));
        assertTrue(manifest.getMessage().contains(RunCheckpoint.MANIFEST + " is damaged"), manifest.getMessage());
    }

    /** A run folder of the old layout (no manifest): resumed when its files agree on the step, refused when a kill mixed them. */
    @Test
    void anOldRunFolderResumesOnlyWhenItsFilesAgree(@TempDir Path tmp) throws Exception {
        Path ref = tmp.resolve("ref");
        trainer(ref, 1).run(new ForwardTrainer.Listener() {});
        Path old = tmp.resolve("old");
        trainer(old, 1).runUntil(EVERY, new ForwardTrainer.Listener() {});
        Files.delete(old.resolve(RunCheckpoint.MANIFEST));
        ForwardTrainer t = trainer(old, 99);
        t.resume(old);
        assertEquals(EVERY, t.step());
        t.run(new ForwardTrainer.Listener() {});
        assertArrayEquals(Files.readAllBytes(ref.resolve(ForwardTrainer.MODEL_FILE)), Files.readAllBytes(old.resolve(ForwardTrainer.MODEL_FILE)));

        // the old writer's failure: a state at step 4 beside a model at step 2 (killed between the renames)
        Path mixed = tmp.resolve("mixed"), later = tmp.resolve("later");
        trainer(mixed, 1).runUntil(EVERY, new ForwardTrainer.Listener() {});
        trainer(later, 1).runUntil(CRASH_STEP, new ForwardTrainer.Listener() {});
        Files.copy(later.resolve(ForwardTrainer.STATE_FILE), mixed.resolve(ForwardTrainer.STATE_FILE), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Files.delete(mixed.resolve(RunCheckpoint.MANIFEST));
        IOException e = assertThrows(IOException.class, () -> trainer(mixed, 99).resume(mixed));
        assertTrue(e.getMessage().contains("no " + RunCheckpoint.MANIFEST) && e.getMessage().contains("train-state.safetensors at step 4")
                && e.getMessage().contains("model.safetensors at step 2") && e.getMessage().contains("--config"), e.getMessage());
    }

    /** Stale temporary files of a killed atomic write are removed on resume; a staged part of a commit that never happened too. */
    @Test
    void staleTemporaryFilesAreCleanedOnResume(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("run");
        trainer(dir, 1).runUntil(EVERY, new ForwardTrainer.Listener() {});
        Path tmpFile = dir.resolve("." + ForwardTrainer.MODEL_FILE + ".1234abcd.tmp"), staged = dir.resolve(RunCheckpoint.stagedName(ForwardTrainer.STATE_FILE));
        Path manifestTmp = dir.resolve("." + RunCheckpoint.MANIFEST + ".tmp"), foreign = dir.resolve(".notes.tmp");
        for (Path p : List.of(tmpFile, staged, manifestTmp, foreign)) Files.write(p, new byte[]{1, 2, 3});
        trainer(dir, 99).resume(dir);
        assertFalse(Files.exists(tmpFile) || Files.exists(staged) || Files.exists(manifestTmp), "stale files removed");
        assertTrue(Files.exists(foreign), "files that are not the checkpoint's are left alone");
    }

    /** The EMA file's metadata has one order (Map.of's order changed with every JVM run): same bytes every time. */
    @Test
    void checkpointBytesAreReproducible(@TempDir Path tmp) throws Exception {
        Path a = tmp.resolve("a"), b = tmp.resolve("b");
        trainer(a, 1).runUntil(EVERY, new ForwardTrainer.Listener() {});
        trainer(b, 1).runUntil(EVERY, new ForwardTrainer.Listener() {});
        for (String f : FILES) assertArrayEquals(Files.readAllBytes(a.resolve(f)), Files.readAllBytes(b.resolve(f)), f);
        assertEquals(List.of("step", "ema_decay", "config", "kind"),
                List.copyOf(Safetensors.readHeader(a.resolve(ForwardTrainer.EMA_FILE)).metadata().keySet()));
        assertEquals(List.of("step", "ema_decay"), List.copyOf(ForwardTrainer.emaMetadata(3, 0.5).keySet()));
    }
}
