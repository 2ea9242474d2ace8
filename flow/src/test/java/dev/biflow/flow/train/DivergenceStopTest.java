// The divergence stop holds whatever the checkpoint interval, non-finite weights are never checkpointed, a run that did not train fails.
package dev.biflow.flow.train;

import dev.biflow.engine.Rng;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.TarFlow;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.*;

class DivergenceStopTest {
    int threads;

    @BeforeEach
    void single() { threads = Parallel.threads(); Parallel.setThreads(1); }

    @AfterEach
    void restore() { Parallel.setThreads(threads); }

    static ImageDataset poisoned(int n) {
        ImageDataset good = ForwardTrainerTest.toyImages(n);
        float[] px = good.pixels.clone();
        Arrays.fill(px, Float.NaN);
        return new ImageDataset("nan", px, good.labels, 1, 8, 8, 3);
    }

    static TarFlow model() { return new TarFlow(ForwardTrainerTest.smallConfig(), new Rng(1)); }

    /** Records checkpoints. */
    static final class Seen implements ForwardTrainer.Listener {
        final List<Long> checkpoints = new ArrayList<>();
        final List<ForwardTrainer.StepStats> steps = new ArrayList<>();

        @Override public void onStep(ForwardTrainer.StepStats s) { steps.add(s); }
        @Override public void onCheckpoint(long step, Path model) { checkpoints.add(step); }
    }

    /** The CLI ran one slice per checkpoint interval, each with a fresh counter: with an interval <= the limit the stop never fired. */
    @Test
    void theStopFiresWhenSlicesAreShorterThanTheLimit(@TempDir Path tmp) throws Exception {
        TrainConfig c = ForwardTrainerTest.cfg(50).withCheckpointEvery(1).withMaxBadSteps(4);
        ForwardTrainer t = new ForwardTrainer(model(), poisoned(32), c, tmp);
        Seen seen = new Seen();
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> {
            while (t.step() < 50) t.runUntil(t.step() + 1, seen);
        });
        assertEquals(4, seen.steps.size());
        assertTrue(e.getMessage().contains("4 steps in a row"), e.getMessage());

        // the count is part of the checkpoint: a resumed run does not start from zero
        Path dir = tmp.resolve("resumed");
        new ForwardTrainer(model(), poisoned(32), c, dir).runUntil(3, seen);
        ForwardTrainer r = new ForwardTrainer(model(), poisoned(32), c, dir);
        r.resume(dir);
        assertEquals(3, RunCheckpoint.read(dir.resolve(RunCheckpoint.MANIFEST)).badInARow());
        Seen after = new Seen();
        assertThrows(TrainingDivergedException.class, () -> r.run(after));
        assertEquals(1, after.steps.size(), "the 4th bad step in a row stops the run");
    }

    @Test
    void checkpointEveryZeroWritesOnlyAtTheEnd(@TempDir Path tmp) throws Exception {
        Seen all = new Seen();
        new ForwardTrainer(model(), ForwardTrainerTest.toyImages(32), ForwardTrainerTest.cfg(5).withCheckpointEvery(0), tmp.resolve("a"))
                .run(all, null);
        assertEquals(List.of(5L), all.checkpoints);
        // a time limit stops between steps, with one checkpoint where it stopped
        Seen limited = new Seen();
        ForwardTrainer t = new ForwardTrainer(model(), ForwardTrainerTest.toyImages(32), ForwardTrainerTest.cfg(50).withCheckpointEvery(0), tmp.resolve("b"));
        t.run(limited, () -> limited.steps.size() >= 3);
        assertEquals(List.of(3L), limited.checkpoints);
        assertEquals(3, RunCheckpoint.read(tmp.resolve("b").resolve(RunCheckpoint.MANIFEST)).step());
        Seen every2 = new Seen();
        new ForwardTrainer(model(), ForwardTrainerTest.toyImages(32), ForwardTrainerTest.cfg(5).withCheckpointEvery(2), tmp.resolve("c")).run(every2, null);
        assertEquals(List.of(2L, 4L, 5L), every2.checkpoints);
    }

    /** Weights that became NaN are not written: the last good checkpoint stays, the run stops with a clear message. */
    @Test
    void nonFiniteWeightsAreNeverCheckpointed(@TempDir Path tmp) throws Exception {
        TarFlow m = model();
        ForwardTrainer t = new ForwardTrainer(m, ForwardTrainerTest.toyImages(32), ForwardTrainerTest.cfg(6).withCheckpointEvery(2).withMaxBadSteps(100), tmp);
        t.runUntil(2, new ForwardTrainer.Listener() {});
        byte[] good = Files.readAllBytes(tmp.resolve(ForwardTrainer.MODEL_FILE));
        m.parameters().get(0).data()[0] = Float.NaN; // what an overflowing update would leave
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> t.run(new ForwardTrainer.Listener() {}));
        assertTrue(e.getMessage().contains("NaN") && e.getMessage().contains("no checkpoint was written")
                && e.getMessage().contains(tmp.resolve(ForwardTrainer.MODEL_FILE).toString()), e.getMessage());
        assertArrayEquals(good, Files.readAllBytes(tmp.resolve(ForwardTrainer.MODEL_FILE)), "the last good checkpoint is kept");
        assertEquals(2, RunCheckpoint.read(tmp.resolve(RunCheckpoint.MANIFEST)).step());
    }

    /** Skipped steps never in a long enough row, but most of the run: it fails instead of reporting "done". */
    @Test
    void aRunThatSkippedMostStepsFails(@TempDir Path tmp) throws Exception {
        ForwardTrainer t = new ForwardTrainer(model(), poisoned(32), ForwardTrainerTest.cfg(10).withCheckpointEvery(0).withMaxBadSteps(1000), tmp);
        TrainingDivergedException e = assertThrows(TrainingDivergedException.class, () -> t.run(new ForwardTrainer.Listener() {}));
        assertTrue(e.getMessage().contains("did not train: 10 of 10 steps"), e.getMessage());
        assertEquals(10, t.skipped());
    }
}
