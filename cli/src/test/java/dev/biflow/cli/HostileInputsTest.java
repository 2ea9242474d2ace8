// Hostile inputs: NaN and out-of-range options, NaN checkpoints, failed resumes; one clear line, exit 2, nothing changed.
package dev.biflow.cli;

import dev.biflow.cli.CliErrorsTest.Run;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static dev.biflow.cli.CliErrorsTest.run;
import static dev.biflow.cli.TrainSettingsTest.ok;
import static dev.biflow.cli.TrainSettingsTest.tinyForward;
import static org.junit.jupiter.api.Assertions.*;

class HostileInputsTest {
    @TempDir static Path shared;
    static Path model;

    @BeforeAll
    static void tinyModel() throws IOException {
        model = TrainSettingsTest.tinyForwardModel(shared);
    }

    /** tinyForward's flags with one option set to a value (replacing the one it has). */
    static String[] tiny(Path runs, String name, String option, String value) {
        List<String> a = new java.util.ArrayList<>(tinyForward(runs, name));
        int i = a.indexOf(option);
        if (i >= 0) a.set(i + 1, value);
        else a.addAll(List.of(option, value));
        return a.toArray(String[]::new);
    }

    static void oneLineError(Run r, String... parts) {
        assertEquals(2, r.code(), r.out() + r.err());
        for (String p : parts) assertTrue(r.err().contains(p), "expected '" + p + "' in: " + r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
    }

    @Test
    void numericOptionsMustBeFiniteAndInRange(@TempDir Path tmp) throws Exception {
        Path png = tmp.resolve("s.png");
        oneLineError(run("sample", "--model", model.toString(), "--temperature", "NaN", "--out", png.toString()),
                "--temperature NaN is not a number", "finite number >= 0");
        oneLineError(run("sample", "--model", model.toString(), "--n", "-1", "--out", png.toString()),
                "--n -1 is out of range", "whole number >= 1");
        oneLineError(run("sample", "--model", model.toString(), "--guidance", "Infinity", "--out", png.toString()), "--guidance Infinity is not finite");
        assertFalse(Files.exists(png), "nothing sampled");
        oneLineError(run("eval", "--model", model.toString(), "--sigma", "NaN", "--samples", "0"), "--sigma NaN is not a number");
        oneLineError(run(tiny(tmp, "e", "--eval-images", "-5")), "--eval-images -5 is out of range: it must be a whole number >= 1");
        oneLineError(run(tiny(tmp, "w", "--width", "0")), "--width 0 is out of range");
        oneLineError(run(tiny(tmp, "b", "--beta2", "1")), "--beta2 1.0 is out of range: it must be a number in [0, 1)");
        oneLineError(run(tiny(tmp, "s", "--sigma", "NaN")), "--sigma NaN is not a number");
        oneLineError(run(tiny(tmp, "t", "--threads", "0")), "--threads 0 is out of range");
        // from a config file too: its values are the options' defaults
        Path cfg = TrainSettingsTest.write(tmp.resolve("c.json"), "{'train': {'lr': 'NaN'}}");
        oneLineError(run(tinyForward(tmp, "c", "--config", cfg.toString()).toArray(String[]::new)), "--lr NaN is not a number", "> 0");
        for (String n : List.of("e", "w", "b", "s", "t", "c")) assertFalse(Files.exists(tmp.resolve(n)), "no run folder for " + n);
    }

    @Test
    void aCheckpointWithNanWeightsIsRefusedUnlessAllowed(@TempDir Path tmp) throws Exception {
        Safetensors.Contents c = Safetensors.read(model);
        Map<String, Tensor> t = new LinkedHashMap<>(c.tensors());
        String first = t.keySet().iterator().next();
        t.get(first).data()[3] = Float.NaN;
        Path bad = tmp.resolve("nan.safetensors");
        Safetensors.write(bad, t, c.metadata());
        Path png = tmp.resolve("s.png");
        oneLineError(run("sample", "--model", bad.toString(), "--out", png.toString(), "--n", "2"),
                bad.toString(), "tensor '" + first + "' has 1 NaN", "--allow-nonfinite");
        assertFalse(Files.exists(png));
        oneLineError(run("eval", "--model", bad.toString(), "--samples", "0", "--bpd-images", "4", "--data", TrainSettingsTest.data.toString(),
                "--out", tmp.resolve("ev").toString()), "1 NaN");
        Run g = run("train-backward", "--forward", bad.toString(), "--data", TrainSettingsTest.data.toString(), "--runs", tmp.toString(), "--name", "g",
                "--perceptual", "none", "--steps", "1");
        oneLineError(g, "1 NaN");
        Run allowed = run("sample", "--model", bad.toString(), "--out", png.toString(), "--n", "2", "--allow-nonfinite", "--threads", "1");
        assertEquals(0, allowed.code(), allowed.err());
        // the flag is per command: the next command checks again
        oneLineError(run("sample", "--model", bad.toString(), "--out", png.toString(), "--n", "2"), "1 NaN");
    }

    @Test
    void aFailedResumeLeavesConfigJsonAlone(@TempDir Path tmp) throws Exception {
        ok(tinyForward(tmp, "r"));
        Path dir = tmp.resolve("r"), cfg = dir.resolve("config.json");
        byte[] saved = Files.readAllBytes(cfg);
        Path state = dir.resolve("train-state.safetensors");
        byte[] s = Files.readAllBytes(state);
        s[s.length - 2] ^= 4;
        Files.write(state, s);
        oneLineError(run("train-forward", "--resume", dir.toString(), "--steps", "5", "--eval-images", "3", "--threads", "1"),
                state.toString(), "CRC32C");
        assertArrayEquals(saved, Files.readAllBytes(cfg), "config.json untouched by a resume that failed");
        s[s.length - 2] ^= 4;
        Files.write(state, s);
        // --eval-images is a setting of the run: a resume uses the saved 4, not the default 2000 (the test split has 8)
        Run again = ok(List.of("train-forward", "--resume", dir.toString(), "--steps", "3", "--threads", "1"));
        assertTrue(again.out().contains("(4 images)"), again.out());
        assertEquals(4, TrainSettingsTest.config(dir).get("eval_images").asInt());
        assertEquals(3, TrainSettingsTest.config(dir).at("/train/steps").asInt(), "a successful resume records --steps");
        try (var files = Files.list(dir)) {
            assertEquals(List.of(), files.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(".")).toList(), "no temporary files left");
        }
    }

    /** Bad datasets are refused before the first step, with the file named: an empty split, a corrupt label. */
    @Test
    void badDatasetsAreRefusedBeforeTraining(@TempDir Path tmp) throws Exception {
        Path empty = tmp.resolve("empty");
        Files.createDirectories(empty);
        TinyIdx.writeSplit(empty, "train", 0, 1);
        TinyIdx.writeSplit(empty, "t10k", 8, 2);
        oneLineError(run(tiny(tmp, "e", "--data", empty.toString())), "train-images-idx3-ubyte holds no images");
        assertFalse(Files.exists(tmp.resolve("e")), "no run folder");

        Path emptyTest = tmp.resolve("empty-test");
        Files.createDirectories(emptyTest);
        TinyIdx.writeSplit(emptyTest, "train", 8, 1);
        TinyIdx.writeSplit(emptyTest, "t10k", 0, 2);
        oneLineError(run(tiny(tmp, "t", "--data", emptyTest.toString())), "t10k-images-idx3-ubyte holds no images");
        assertFalse(Files.exists(tmp.resolve("t").resolve("model.safetensors")), "the test split is checked before the first step");

        Path huge = tmp.resolve("huge-label");
        Files.createDirectories(huge);
        TinyIdx.writeSplit(huge, "train", 4, 1);
        TinyIdx.writeSplit(huge, "t10k", 8, 2);
        java.io.ByteArrayOutputStream lab = new java.io.ByteArrayOutputStream();
        try (java.io.DataOutputStream d = new java.io.DataOutputStream(lab)) {
            d.writeInt(0x00000C01); // int32 labels
            d.writeInt(4);
            for (int v : new int[]{0, 1, Integer.MAX_VALUE, 2}) d.writeInt(v);
        }
        Files.write(huge.resolve("train-labels-idx1-ubyte"), lab.toByteArray());
        oneLineError(run(tiny(tmp, "h", "--data", huge.toString())), "label 2147483647 of image 2 is outside [0, 65536)");
    }

    /** File-system errors name the file, what was being done and why. */
    @Test
    void fileSystemErrorsSayWhatAndWhy(@TempDir Path tmp) throws Exception {
        Path file = Files.writeString(tmp.resolve("not-a-folder"), "x");
        oneLineError(run(tiny(file, "r", "--runs", file.toString())), "cannot create the run folder " + file.resolve("r"), "Not a directory");
        oneLineError(run("sample", "--model", model.toString(), "--n", "2", "--out", file.resolve("s.png").toString(), "--threads", "1"),
                file.toString());
    }
}
