package dev.biflow.samples;

import dev.biflow.engine.Rng;
import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BiFlowModel;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.imageio.ImageIO;
import java.awt.image.BufferedImage;
import java.io.FileNotFoundException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SampleBiFlowTest {
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());
    /** 8x8 grayscale images, 2x2 patches (16 tokens of 4 values), 2 blocks, 3 classes. */
    private static final TarFlowConfig F = new TarFlowConfig(1, 8, 2, 16, 2, 1, 3, 8, NormControl.SOFT, 3f);

    /** Randomly initialised F and G (G with training-time CFG, as forFlow gives a conditional F), saved to dir. */
    private static Path[] savePair(Path dir) throws Exception {
        Path f = dir.resolve("forward.safetensors"), g = dir.resolve("backward.safetensors");
        Checkpoints.save(new TarFlow(F, new Rng(1)), f, Map.of());
        BiFlowModel model = new BiFlowModel(BackwardConfig.forFlow(F).withSize(16, 8, 1, 1), new Rng(2));
        BackwardCheckpoints.save(model, g, Map.of(BackwardCheckpoints.SIGMA_KEY, "0.1", BackwardCheckpoints.FORWARD_CONFIG_KEY, F.toJson()));
        return new Path[]{f, g};
    }

    @Test
    void writesAGridOfTheExpectedSizeInOneEvaluation(@TempDir Path dir) throws Exception {
        Path[] pair = savePair(dir);
        Path png = dir.resolve("grid.png");
        // 7 images, 3 per row -> 3 rows; each cell 8 * 2 + 2 px
        var o = new SampleBiFlow.Options(pair[0], pair[1], png, 7, 1.5f, 0, 3, 2);
        SampleBiFlow.Result r = SampleBiFlow.run(o, QUIET);
        assertTrue(Files.isRegularFile(png));
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(3 * (8 * 2 + 2) + 2, img.getWidth());
        assertEquals(3 * (8 * 2 + 2) + 2, img.getHeight());
        assertEquals(img.getWidth(), r.width());
        assertEquals(img.getHeight(), r.height());
        assertArrayEquals(new int[]{0, 1, 2, 0, 1, 2, 0}, r.labels(), "labels cycle through the classes");
        assertEquals(1, r.evaluations(), "training-time CFG: one pass of G for the guided batch");
        assertEquals(1.5f, r.w());
    }

    @Test
    void defaultsPickOneClassPerColumnAndGuidanceOne(@TempDir Path dir) throws Exception {
        Path[] pair = savePair(dir);
        Path png = dir.resolve("d.png");
        SampleBiFlow.Options o = SampleBiFlow.parse(new String[]{pair[0].toString(), pair[1].toString(), "--out", png.toString()});
        SampleBiFlow.Result r = SampleBiFlow.run(o, QUIET);
        assertEquals(1f, r.w());
        assertEquals(10, r.labels().length, "2 x max(classes, 5) images");
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(3 * (8 * 3 + 2) + 2, img.getWidth(), "3 columns (one per class) at scale 3");
        assertEquals(4 * (8 * 3 + 2) + 2, img.getHeight(), "ceil(10 / 3) = 4 rows");
    }

    @Test
    void missingCheckpointsAreNamed(@TempDir Path dir) throws Exception {
        Path f = dir.resolve("no-such-forward.safetensors"), g = dir.resolve("no-such-backward.safetensors");
        Path png = dir.resolve("x.png");
        var e = assertThrows(FileNotFoundException.class,
                () -> SampleBiFlow.run(new SampleBiFlow.Options(f, g, png, 4, 0f, 0, 2, 1), QUIET));
        assertTrue(e.getMessage().contains("no-such-forward.safetensors") && e.getMessage().contains("no-such-backward.safetensors"), e.getMessage());
        assertTrue(e.getMessage().contains("samples/run.sh SampleBiFlow FORWARD.safetensors BACKWARD.safetensors"), e.getMessage());

        // only G missing: the message names G and not F
        Path[] pair = savePair(dir);
        var e2 = assertThrows(FileNotFoundException.class,
                () -> SampleBiFlow.run(new SampleBiFlow.Options(pair[0], g, png, 4, 0f, 0, 2, 1), QUIET));
        assertTrue(e2.getMessage().contains("no-such-backward.safetensors"), e2.getMessage());
        assertFalse(e2.getMessage().contains(pair[0].toAbsolutePath().toString()), e2.getMessage());
        assertFalse(Files.exists(png), "nothing is written when a checkpoint is missing");
    }

    @Test
    void parseReadsPathsAndOptions() {
        SampleBiFlow.Options d = SampleBiFlow.parse(new String[0]);
        assertEquals(SampleBiFlow.DEFAULT_FORWARD, d.forward());
        assertEquals(SampleBiFlow.DEFAULT_BACKWARD, d.backward());
        assertTrue(Float.isNaN(d.w()));
        SampleBiFlow.Options o = SampleBiFlow.parse(new String[]{"a.st", "b.st", "--w", "2", "--n", "40", "--seed", "3", "--nrow", "8", "--scale", "1"});
        assertEquals(Path.of("a.st"), o.forward());
        assertEquals(Path.of("b.st"), o.backward());
        assertEquals(2f, o.w());
        assertEquals(40, o.n());
        assertEquals(3, o.seed());
        assertEquals(8, o.nrow());
        assertEquals(1, o.scale());
        assertThrows(IllegalArgumentException.class, () -> SampleBiFlow.parse(new String[]{"--bogus", "1"}));
        assertThrows(IllegalArgumentException.class, () -> SampleBiFlow.parse(new String[]{"a", "b", "c"}));
    }
}
