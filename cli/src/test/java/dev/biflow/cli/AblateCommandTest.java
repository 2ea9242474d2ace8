// biflow ablate on tiny models: the table's shape, variants that really differ, skipping finished runs, resuming killed ones, grid errors.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.biflow.cli.CliErrorsTest.Run;
import dev.biflow.flow.features.FeatureNets;
import dev.biflow.flow.train.RunCheckpoint;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;

import static dev.biflow.cli.CliErrorsTest.run;
import static dev.biflow.cli.TrainSettingsTest.ok;
import static org.junit.jupiter.api.Assertions.*;

class AblateCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir static Path shared;
    static Path data, forward, evalNet;

    /** The tiny dataset and F of the cli tests (TrainSettingsTest's fixture) and a tiny evaluation network (2 steps). */
    @BeforeAll
    static void tinyModels() throws IOException {
        forward = TrainSettingsTest.tinyForwardModel(shared);
        data = TrainSettingsTest.data;
        Path nets = shared.resolve("nets");
        ok(List.of("train-features", "--arch", "eval", "--steps", "2", "--batch", "8", "--data", data.toString(), "--out", nets.toString(),
                "--threads", "1"));
        evalNet = nets.resolve(FeatureNets.EVAL_FILE);
    }

    @AfterEach
    void noHook() { RunCheckpoint.setFaultHook(null); }

    /** A grid of two variants (they differ in strategy, learning rate and guidance) x 2 seeds, 3 steps each, graded on 8 samples. */
    static Path tinyGrid(Path dir, String extraVariant) throws IOException {
        String grid = "{'forward': '" + forward + "', 'data': '" + data + "', 'eval_net': '" + evalNet + "',"
                + " 'base': {'perceptual': 'none', 'width': 16, 'head-dim': 8, 'layers-per-stage': 1, 'batch': 4, 'checkpoint-every': 1},"
                + " 'budget': {'steps': 3}, 'seeds': 2, 'samples': 8, 'batch': 4,"
                + " 'variants': [{'name': 'align', 'options': {'strategy': 'hidden-alignment'}},"
                + "              {'name': 'naive', 'options': {'strategy': 'naive', 'lr': 0.003, 'cfg': 'none'}}" + extraVariant + "]}";
        return TrainSettingsTest.write(dir.resolve("grid.json"), grid);
    }

    static Run ablate(Path grid, Path out, String... more) {
        List<String> a = new java.util.ArrayList<>(List.of("ablate", "--grid", grid.toString(), "--out", out.toString(), "--threads", "1"));
        a.addAll(List.of(more));
        return run(a.toArray(String[]::new));
    }

    /** The modification time of every model and grade file of the ablation (what a rerun must not rewrite). */
    static Map<Path, FileTime> stamps(Path out) throws IOException {
        Map<Path, FileTime> m = new LinkedHashMap<>();
        try (var files = Files.walk(out.resolve("runs"))) {
            for (Path p : files.filter(f -> f.getFileName().toString().equals("backward.safetensors")
                    || f.getFileName().toString().equals(AblateCommand.GRADE_FILE)).sorted().toList())
                m.put(p, Files.getLastModifiedTime(p));
        }
        return m;
    }

    static JsonNode json(Path p) throws IOException { return JSON.readTree(p.toFile()); }

    @Test
    void runsTheGridSkipsFinishedRunsAndResumesKilledOnes(@TempDir Path tmp) throws Exception {
        Path grid = tinyGrid(tmp, "");
        Path out = tmp.resolve("ab");
        // a kill during the first run's step-2 checkpoint: its step-1 checkpoint stays, the rest of the grid goes on
        AtomicBoolean armed = new AtomicBoolean(true);
        RunCheckpoint.setFaultHook((step, point) -> {
            if (step == 2 && point.equals("manifest:begin") && armed.getAndSet(false)) throw new IllegalStateException("simulated kill");
        });
        Run first = ablate(grid, out);
        RunCheckpoint.setFaultHook(null);
        assertEquals(2, first.code(), first.err());
        assertTrue(first.err().contains("1 of 4 runs failed") && first.err().contains("simulated kill"), first.err());
        Path killed = out.resolve("runs/align/seed-0");
        assertEquals(1, RunCheckpoint.read(killed.resolve(RunCheckpoint.MANIFEST)).step());
        assertFalse(Files.exists(killed.resolve(AblateCommand.GRADE_FILE)));
        assertTrue(Files.readString(out.resolve(AblateTable.TABLE_CSV)).contains("align,0,false,1,2,"), "the table holds what is done");

        Map<Path, FileTime> before = stamps(out);
        before.keySet().removeIf(p -> p.startsWith(killed));
        assertEquals(3 * 2, before.size(), "three runs trained and graded");
        Run second = ablate(grid, out);
        assertEquals(0, second.code(), second.err());
        assertTrue(second.out().contains("3 finished, 1 to do"), second.out());
        assertTrue(second.out().contains("align seed 0: resuming from its checkpoint"), second.out());
        assertEquals(3, RunCheckpoint.read(killed.resolve(RunCheckpoint.MANIFEST)).step());
        before.forEach((p, t) -> assertDoesNotThrow(() -> assertEquals(t, Files.getLastModifiedTime(p), p + " was rewritten")));

        // the table: 2 variants x (mean, sd, min, max) per metric, both seeds done
        List<String> csv = Files.readAllLines(out.resolve(AblateTable.TABLE_CSV));
        assertEquals(3, csv.size(), String.join("\n", csv));
        int columns = 5 + 4 * AblateTable.METRICS.size();
        for (String line : csv) assertEquals(columns, line.split(",", -1).length, line);
        assertTrue(csv.get(1).startsWith("align,0,false,2,2,"), csv.get(1));
        assertTrue(csv.get(2).startsWith("naive,0,false,2,2,"), csv.get(2));
        for (String line : csv.subList(1, 3))
            for (String cell : line.split(",", -1)) assertFalse(cell.isEmpty(), "every mean and spread is defined with 2 seeds: " + line);
        List<String> md = Files.readAllLines(out.resolve(AblateTable.TABLE_MD));
        assertEquals(2 + 1 + 2, md.size(), String.join("\n", md)); // header, rule, floor, 2 variants
        assertTrue(md.get(3).startsWith("| align | 0 | 2/2 | ") && md.get(3).contains(" ± "), md.get(3));
        assertEquals(4, Files.readAllLines(out.resolve(AblateTable.RESULTS)).size());
        for (String f : List.of(AblateTable.PLOT, "report.html", "config.json")) assertTrue(Files.exists(out.resolve(f)), f);
        String html = Files.readString(out.resolve("report.html"));
        assertTrue(html.contains("naive") && html.contains("biflow ablate --grid " + grid), "the report shows the variants and the command as typed");

        // each variant and seed really trained differently: the recorded settings and the weights differ
        JsonNode a0 = TrainSettingsTest.config(out.resolve("runs/align/seed-0")), n0 = TrainSettingsTest.config(out.resolve("runs/naive/seed-0"));
        JsonNode a1 = TrainSettingsTest.config(out.resolve("runs/align/seed-1"));
        assertEquals("hidden-alignment", a0.at("/backward/strategy").asText());
        assertEquals("naive", n0.at("/backward/strategy").asText());
        assertEquals(0.001, a0.at("/train/lr").asDouble());
        assertEquals(0.003, n0.at("/train/lr").asDouble());
        assertEquals("training-time", a0.at("/backward/cfg").asText());
        assertEquals("none", n0.at("/backward/cfg").asText());
        assertEquals(0, a0.at("/train/seed").asLong());
        assertEquals(1, a1.at("/train/seed").asLong());
        assertEquals(3, a0.at("/train/steps").asLong());
        assertEquals(a0.at("/backward/width"), n0.at("/backward/width"), "the base options are shared");
        Path g = Path.of("backward.safetensors");
        assertNotEquals(-1, Files.mismatch(out.resolve("runs/align/seed-0").resolve(g), out.resolve("runs/align/seed-1").resolve(g)));
        assertNotEquals(-1, Files.mismatch(out.resolve("runs/align/seed-0").resolve(g), out.resolve("runs/naive/seed-0").resolve(g)));
        JsonNode grade = json(out.resolve("runs/naive/seed-1").resolve(AblateCommand.GRADE_FILE));
        assertEquals(8, grade.at("/rows/0/n").asInt());
        assertTrue(grade.get("recon_mse").asDouble() > 0);

        // a third time: nothing to do, nothing rewritten
        Map<Path, FileTime> done = stamps(out);
        Run third = ablate(grid, out);
        assertEquals(0, third.code(), third.err());
        assertTrue(third.out().contains("4 finished, 0 to do"), third.out());
        done.forEach((p, t) -> assertDoesNotThrow(() -> assertEquals(t, Files.getLastModifiedTime(p), p + " was rewritten")));
        assertTrue(Files.exists(out.resolve("samples-align.png")) && Files.exists(out.resolve("samples-naive.png")));

        // grading killed before it wrote its grades: only the grading reruns
        Path regrade = out.resolve("runs/naive/seed-1");
        Files.delete(regrade.resolve(AblateCommand.GRADE_FILE));
        FileTime model = Files.getLastModifiedTime(regrade.resolve("backward.safetensors"));
        Run dry = ablate(grid, out, "--dry-run");
        assertEquals(0, dry.code(), dry.err());
        assertTrue(dry.out().matches("(?s).*naive seed 1\\s+to do.*") && dry.out().matches("(?s).*naive seed 0\\s+finished.*"), dry.out());
        assertFalse(Files.exists(regrade.resolve(AblateCommand.GRADE_FILE)), "a dry run runs nothing");
        Run fourth = ablate(grid, out);
        assertEquals(0, fourth.code(), fourth.err());
        assertTrue(fourth.out().contains("3 finished, 1 to do"), fourth.out());
        assertEquals(model, Files.getLastModifiedTime(regrade.resolve("backward.safetensors")), "not retrained");
        assertEquals(grade.at("/rows/0/fd_fashionnet").asDouble(), json(regrade.resolve(AblateCommand.GRADE_FILE)).at("/rows/0/fd_fashionnet").asDouble(),
                "the same model, noise and labels grade the same");
    }

    /**
     * A forward model the grid trains itself is trained once and shared by the variants that name it;
     * an exact-inverse variant trains nothing and is graded once; other settings for a finished run
     * are refused, not retrained.
     */
    @Test
    void trainedForwardIsSharedExactInverseIsGradedOnceAndChangedSettingsAreRefused(@TempDir Path tmp) throws Exception {
        Path grid = TrainSettingsTest.write(tmp.resolve("grid.json"), "{'data': '" + data + "', 'eval_net': '" + evalNet + "',"
                + " 'forwards': {'tiny': {'options': {'width': 16, 'blocks': 2, 'layers': 1, 'head-dim': 8, 'batch': 4, 'eval-images': 4},"
                + "                       'budget': {'steps': 2}}},"
                + " 'forward': 'tiny',"
                + " 'base': {'perceptual': 'none', 'width': 16, 'head-dim': 8, 'layers-per-stage': 1, 'batch': 4, 'checkpoint-every': 1},"
                + " 'budget': {'steps': 3, 'minutes': 10}, 'seeds': 1, 'samples': 8, 'batch': 4, 'guidance': [0, 1],"
                + " 'variants': [{'name': 'align', 'budget': {'steps': 2}}, {'name': 'naive', 'options': {'strategy': 'naive'}},"
                + "              {'name': 'exact', 'options': {'strategy': 'exact-inverse'}}]}");
        Path out = tmp.resolve("ab");
        Run r = ablate(grid, out);
        assertEquals(0, r.code(), r.err());
        Path f = out.resolve("forward/tiny/model.safetensors");
        assertTrue(Files.exists(f));
        try (var forwards = Files.list(out.resolve("forward"))) {
            assertEquals(1, forwards.count(), "one F, trained once");
        }
        for (String v : List.of("align", "naive"))
            assertEquals(f.toString(), TrainSettingsTest.config(out.resolve("runs").resolve(v).resolve("seed-0")).get("forward").asText(), v);
        JsonNode state = json(out.resolve("runs/align/seed-0").resolve(AblateCommand.STATE_FILE));
        assertTrue(state.get("trained").asBoolean() && state.get("train_seconds").asDouble() > 0, state.toString());
        // a variant's own budget replaces the grid's for its runs only
        assertEquals(2, RunCheckpoint.read(out.resolve("runs/align/seed-0").resolve(RunCheckpoint.MANIFEST)).step());
        assertEquals(3, RunCheckpoint.read(out.resolve("runs/naive/seed-0").resolve(RunCheckpoint.MANIFEST)).step());
        JsonNode alignGrade = json(out.resolve("runs/align/seed-0").resolve(AblateCommand.GRADE_FILE));
        assertTrue(alignGrade.get("g_params").asLong() > 0 && alignGrade.get("train_seconds").asDouble() > 0, alignGrade.toString());
        assertTrue(Files.exists(out.resolve(AblateTable.TRADEOFF)), "the quality / training-time plot");
        assertTrue(Files.readAllLines(out.resolve(AblateTable.TABLE_CSV)).get(0).contains("train_minutes_mean"));

        Path exact = out.resolve("runs/exact/exact");
        assertTrue(Files.exists(exact.resolve(AblateCommand.GRADE_FILE)));
        assertFalse(Files.exists(exact.resolve("backward.safetensors")));
        String md = Files.readString(out.resolve(AblateTable.TABLE_MD));
        assertTrue(md.contains("| exact (exact inverse) | 0 | 1 (no training) |") && md.contains("| exact (exact inverse) | 1 | 1 (no training) |"), md);
        JsonNode grade = json(exact.resolve(AblateCommand.GRADE_FILE));
        assertEquals(2, grade.get("rows").size(), "one row per guidance scale");
        assertTrue(grade.at("/rows/0/nfe").asInt() > 1 && grade.at("/rows/1/nfe").asInt() > grade.at("/rows/0/nfe").asInt(),
                "the exact inverse's NFE, doubled by CFG: " + grade);
        assertEquals(3 * 2, Files.readAllLines(out.resolve(AblateTable.RESULTS)).size(), "one line per run and guidance scale");

        // a session killed after 700 s of a 10-minute budget, at a checkpoint: its time is spent, so nothing more trains
        Path spent = out.resolve("runs/naive/seed-0");
        long ck = Files.getLastModifiedTime(spent.resolve(RunCheckpoint.MANIFEST)).toMillis();
        JsonNode st = json(spent.resolve(AblateCommand.STATE_FILE));
        TrainSettingsTest.write(spent.resolve(AblateCommand.STATE_FILE), "{'settings': " + JSON.writeValueAsString(st.get("settings").asText()).replace('"', '\'')
                + ", 'trained': false, 'train_seconds': 0, 'session_started_ms': " + (ck - 700_000) + "}");
        Files.delete(spent.resolve(AblateCommand.GRADE_FILE));
        FileTime model = Files.getLastModifiedTime(spent.resolve("backward.safetensors"));
        Run budgetSpent = ablate(grid, out);
        assertEquals(0, budgetSpent.code(), budgetSpent.err());
        assertFalse(budgetSpent.out().contains("resuming"), budgetSpent.out());
        assertEquals(model, Files.getLastModifiedTime(spent.resolve("backward.safetensors")));
        JsonNode after = json(spent.resolve(AblateCommand.STATE_FILE));
        assertTrue(after.get("trained").asBoolean(), after.toString());
        assertEquals(700, after.get("train_seconds").asDouble(), 1, after.toString());

        Run changed = ablate(grid, out, "--steps", "4");
        assertEquals(2, changed.code());
        assertTrue(changed.err().contains("was made with other settings") && changed.err().contains("--steps=4"), changed.err());
        assertEquals(2, RunCheckpoint.read(out.resolve("runs/align/seed-0").resolve(RunCheckpoint.MANIFEST)).step(), "not retrained");
    }

    @Test
    void everyShippedGridParsesAndNamesOnlyValidOptions() throws Exception {
        for (String name : AblateGrid.SHIPPED) {
            AblateGrid g = AblateGrid.parse(name, name, AblateGrid.shippedText(name));
            g.checkOptions(); // train-backward's (and train-forward's) own parser, values and ranges included
            assertFalse(g.description.isEmpty(), name);
            assertTrue(g.variants.size() >= 2, name);
        }
        Run list = run("ablate", "--list");
        assertEquals(0, list.code(), list.err());
        for (String name : AblateGrid.SHIPPED) assertTrue(list.out().contains(name), list.out());
    }

    @Test
    void gridErrorsNameTheProblemAndTheFix(@TempDir Path tmp) throws Exception {
        Run unknown = run("ablate", "--grid", "strategy");
        assertEquals(2, unknown.code());
        assertTrue(unknown.err().contains("unknown grid 'strategy'") && unknown.err().contains("strategies, denoise, norm-control, distance, guidance"),
                unknown.err());

        Path bad = TrainSettingsTest.write(tmp.resolve("bad.json"), "{'variants': [{'name': 'a'}],\n 'seeds': 'three'}");
        Run badField = run("ablate", "--grid", bad.toString());
        assertEquals(2, badField.code());
        assertTrue(badField.err().contains("'seeds' must be a whole number"), badField.err());

        Path syntax = TrainSettingsTest.write(tmp.resolve("syntax.json"), "{'variants': [\n{'name': 'a'},]}");
        Run badJson = run("ablate", "--grid", syntax.toString());
        assertEquals(2, badJson.code());
        assertTrue(badJson.err().contains("is not valid JSON") && badJson.err().contains("line 2"), badJson.err());

        Path option = tinyGrid(tmp, ", {'name': 'typo', 'options': {'stratgy': 'naive'}}");
        Run badOption = run("ablate", "--grid", option.toString(), "--out", tmp.resolve("o").toString());
        assertEquals(2, badOption.code());
        assertTrue(badOption.err().contains("variants[2] (typo)") && badOption.err().contains("unknown train-backward option 'stratgy'")
                && badOption.err().contains("valid options: ") && badOption.err().contains("strategy, denoise"), badOption.err());
        assertFalse(Files.exists(tmp.resolve("o")), "nothing runs before the grid is checked");
        Run dry = run("ablate", "--grid", tinyGrid(tmp, "").toString(), "--out", tmp.resolve("o").toString(), "--dry-run");
        assertEquals(0, dry.code(), dry.err());
        assertTrue(dry.out().contains("0 finished, 4 to do"), dry.out());
        assertFalse(Files.exists(tmp.resolve("o")), "a dry run writes nothing");

        Path value = tinyGrid(tmp, ", {'name': 'range', 'options': {'w-zero-prob': 2}}");
        Run badValue = run("ablate", "--grid", value.toString(), "--out", tmp.resolve("o").toString());
        assertTrue(badValue.err().contains("--w-zero-prob 2.0 is out of range"), badValue.err());

        Path noF = TrainSettingsTest.write(tmp.resolve("nof.json"), "{'forward': '" + tmp.resolve("f.safetensors") + "', 'variants': [{'name': 'a'}]}");
        Run missingF = run("ablate", "--grid", noF.toString(), "--out", tmp.resolve("o").toString());
        assertEquals(2, missingF.code());
        assertTrue(missingF.err().contains("forward model '" + tmp.resolve("f.safetensors") + "' (variants a)")
                && missingF.err().contains("train-forward"), missingF.err());
    }
}
