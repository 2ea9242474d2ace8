// biflow train-features: the Fashion-MNIST feature networks (perceptual losses of G, and the evaluation network).
package dev.biflow.cli;

import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.engine.Rng;
import dev.biflow.engine.kernels.Parallel;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.FeatureNet;
import dev.biflow.flow.features.FeatureNetConfig;
import dev.biflow.flow.features.FeatureNetTrainer;
import dev.biflow.flow.features.FeatureNets;
import me.tongfei.progressbar.ProgressBar;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.BufferedWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "train-features", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Train the feature networks as Fashion-MNIST classifiers: convnet (the LPIPS-style perceptual loss), "
                + "convnext (the second perceptual loss) and eval (FashionNet-eval, for metrics only; never a loss).",
                "Writes into --out: " + FeatureNets.LPIPS_FILE + ", " + FeatureNets.CONVNEXT_FILE + " and " + FeatureNets.EVAL_FILE
                        + " (the names the losses and the metrics load), the training curves as metrics.jsonl and these settings as config.json.",
                "Settings: flags > --config FILE > the defaults below."},
        footer = {"", "Examples:",
                "  # all three, the shipped recipe (800/1000/800 steps of 128 images):",
                "  biflow train-features",
                "  biflow train-features --arch eval --out runs/eval-net --seed 1",
                "  # 30 minutes for the three together:",
                "  biflow train-features --arch all --time-limit 30",
                "  # repeat a run with another seed:",
                "  biflow train-features --config runs/feature-nets/config.json \\",
                "      --out runs/feature-nets-s2 --seed 2",
                "",
                "Config file: the format of <out>/config.json; every key is optional,",
                "an unknown key is an error; steps null = the shipped steps of each network.",
                "  {\"arch\": \"all\", \"steps\": null, \"batch\": 128, \"lr\": 0.002, \"seed\": 0,",
                "   \"data\": \"/usr/share/datasets/fashion-mnist\"}"})
final class TrainFeaturesCommand implements Callable<Integer>, ConfigFile.Configurable {
    static final ConfigFile.Schema SCHEMA = new ConfigFile.Schema()
            .option("arch", "--arch", v -> v.equalsIgnoreCase("all") ? "all" : FeatureNetConfig.Arch.parse(v).name())
            .option("steps", "--steps").option("batch", "--batch").option("lr", "--lr").option("seed", "--seed")
            .option("data", "--data");

    @Override public ConfigFile.Schema configSchema() { return SCHEMA; }


    @Mixin Common common;
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--config", paramLabel = "FILE", description = {"Settings from a JSON file in the format of <out>/config.json (see below); "
            + "flags override it.", "E.g. --config runs/feature-nets/config.json --out runs/feature-nets-s2 --seed 2"}) Path config;
    @Option(names = "--arch", description = "convnet | convnext | eval | all") String arch = "all";
    @Range(min = 1) @Option(names = "--steps", description = "Optimizer steps per network (default: the shipped recipe, "
            + "convnet 800, convnext 1000, eval 800).") Long steps;
    @Range(min = 1) @Option(names = "--batch", description = "Images per step.") int batch = 128;
    @Range(min = 0, minOpen = true) @Option(names = "--lr", description = "Peak learning rate (warm-up, then cosine).") double lr = 2e-3;
    @Option(names = "--seed", description = "Random seed (weights, data order, augmentation).") long seed = 0;
    @Option(names = "--data", description = "Directory with MNIST-format IDX files.") Path data = ImageDataset.FASHION_MNIST_DIR;
    @Option(names = "--out", description = "Output folder for the networks, config.json and metrics.jsonl.") Path out = Path.of("runs", "feature-nets");
    @Range(min = 0) @Option(names = "--time-limit", description = "Stop after this many minutes for all networks together, shared evenly "
            + "(0 = none; the learning rate still ends its cosine).") double timeLimit = 0;

    @Override
    public Integer call() throws Exception {
        common.apply();
        List<FeatureNetConfig.Arch> archs = archs(arch);
        if (steps != null && steps < 1) throw new IllegalArgumentException("--steps must be >= 1, got " + steps);
        if (batch < 1) throw new IllegalArgumentException("--batch must be >= 1, got " + batch);
        if (!(lr > 0)) throw new IllegalArgumentException("--lr must be > 0, got " + lr);
        if (!(timeLimit >= 0)) throw new IllegalArgumentException("--time-limit must be >= 0 minutes, got " + timeLimit);
        ImageDataset train = ImageDataset.loadIdx(data, "train"), test = ImageDataset.loadIdx(data, "test");
        Files.createDirectories(out);
        writeConfig();
        if (config != null) System.out.println("train-features: settings from " + config + " (flags override it)");
        long deadline = timeLimit > 0 ? System.nanoTime() + (long) (timeLimit * 60e9) : Long.MAX_VALUE;
        Path metrics = out.resolve("metrics.jsonl");
        List<String> summary = new ArrayList<>();
        for (int i = 0; i < archs.size(); i++) {
            FeatureNetConfig.Arch a = archs.get(i);
            long n = steps != null ? steps : FeatureNetTrainer.defaultSteps(a);
            double seconds = timeLimit > 0 ? Math.max(1, (deadline - System.nanoTime()) / 1e9 / (archs.size() - i)) : 0;
            FeatureNetTrainer.Options o = FeatureNetTrainer.Options.defaults(seconds).withSteps(n).withBatch(batch).withLr(lr)
                    .withSeed(seed).withLogEvery(1);
            FeatureNet net = FeatureNets.build(FeatureNetConfig.defaultFor(a), new Rng(seed));
            Path file = out.resolve(FeatureNets.fileName(a));
            System.out.printf(Locale.ROOT, "train-features: %s, %,d parameters, %d steps of %d%s, data %s (%d images), %d threads -> %s%n",
                    net.displayName(), net.parameterCount(), n, batch, seconds > 0 ? String.format(Locale.ROOT, " or %s", Common.duration(seconds)) : "",
                    train.name, train.n, Parallel.threads(), file);
            FeatureNetTrainer.Result r;
            try (BufferedWriter mw = Files.newBufferedWriter(metrics, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
                 ProgressBar pb = Common.bar(a.id, n, "step")) {
                // the trainer's closing line is not needed: the summary below says it
                r = FeatureNetTrainer.train(net, train, test, o, st -> {
                    pb.stepTo(st.step());
                    pb.setExtraMessage(String.format(Locale.ROOT, " loss %.4f acc %.3f", st.loss(), st.trainAccuracy()));
                    try {
                        mw.write(String.format(Locale.ROOT, "{\"arch\":\"%s\",\"step\":%d,\"loss\":%s,\"train_acc\":%s,\"lr\":%s}%n",
                                a.id, st.step(), num(st.loss()), num(st.trainAccuracy()), num(st.lr())));
                        if (st.step() % 50 == 0) mw.flush();
                    } catch (java.io.IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                });
                mw.write(String.format(Locale.ROOT, "{\"arch\":\"%s\",\"step\":%d,\"train_loss\":%s,\"test_accuracy\":%s,\"seconds\":%.1f}%n",
                        a.id, r.steps(), num(r.trainLoss()), num(r.testAccuracy()), r.seconds()));
            }
            Map<String, String> meta = new LinkedHashMap<>(o.toMetadata());
            meta.putAll(r.toMetadata());
            meta.put("weight_seed", Long.toString(seed));
            meta.put("dataset", train.name);
            meta.put("threads", Integer.toString(Parallel.threads()));
            FeatureNets.save(net, file, meta);
            String line = String.format(Locale.ROOT, "%s: %d steps in %s, train loss %.4f, test accuracy %.4f (%d images); wrote %s",
                    a.id, r.steps(), Common.duration(r.seconds()), r.trainLoss(), r.testAccuracy(), test.n, file);
            System.out.println("train-features: done " + line);
            summary.add(a.id + " " + String.format(Locale.ROOT, "%.4f", r.testAccuracy()));
        }
        if (archs.size() > 1)
            System.out.println("train-features: all done, test accuracy " + String.join(", ", summary) + "; networks in " + out);
        return 0;
    }

    static List<FeatureNetConfig.Arch> archs(String s) {
        if (s.trim().equalsIgnoreCase("all"))
            return List.of(FeatureNetConfig.Arch.CONVNET, FeatureNetConfig.Arch.CONVNEXT, FeatureNetConfig.Arch.EVAL);
        try {
            return List.of(FeatureNetConfig.Arch.parse(s));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--arch " + s + " is not a feature network; choose convnet (LPIPS-style loss), "
                    + "convnext (second perceptual loss), eval (FashionNet-eval, metrics only) or all");
        }
    }

    private void writeConfig() throws java.io.IOException {
        ObjectNode o = ConfigFile.json().createObjectNode();
        o.put("arch", arch);
        if (steps != null) o.put("steps", steps);
        else o.putNull("steps");
        o.put("batch", batch).put("lr", lr).put("seed", seed).put("data", data.toString());
        ConfigFile.write(out.resolve(ConfigFile.FILE_NAME), o);
    }

    private static String num(double v) { return Double.isFinite(v) ? String.format(Locale.ROOT, "%.6g", v) : "null"; }
}
