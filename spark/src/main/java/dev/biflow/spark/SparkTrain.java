// biflow spark train-forward | train-backward: the training commands, data-parallel over Spark workers.
package dev.biflow.spark;

import dev.biflow.cli.TrainerHooks;
import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.train.ForwardTrainer;
import picocli.CommandLine.Command;
import picocli.CommandLine.ParentCommand;
import picocli.CommandLine.Unmatched;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * The arguments after the command name are those of the plain command (see its --help), which runs
 * as always (settings, run folder, checkpoints, --resume, report) with one change: each step's
 * gradient comes from --partitions workers ({@link DataParallel}).
 */
final class SparkTrain {
    private SparkTrain() {}

    static int run(SparkCommand spark, String command, List<String> args) {
        if (args.contains("--help") || args.contains("-h")) // the plain command's help needs no cluster
            return dev.biflow.cli.Main.execute(command, "--help");
        try (SparkCommand.Session ss = spark.open(command)) {
            TrainerHooks.install(new TrainerHooks.Hook() {
                @Override
                public void forward(ForwardTrainer t, Path dir) {
                    System.out.println("spark: data-parallel over " + ss.partitions() + " workers (" + ss.sc().master() + ")");
                    DataParallel.forward(ss, t, dir);
                }

                @Override
                public void backward(BackwardTrainer t, Path dir, Path forward, TrainerHooks.Perceptual p) throws java.io.IOException {
                    System.out.println("spark: data-parallel over " + ss.partitions() + " workers (" + ss.sc().master() + "), a barrier stage per step");
                    DataParallel.backward(ss, t, dir, forward, p);
                }
            });
            List<String> all = new ArrayList<>();
            all.add(command);
            all.addAll(args);
            DataParallel.COST.reset();
            int rc = dev.biflow.cli.Main.execute(all.toArray(String[]::new));
            System.out.println(DataParallel.COST.summary(ss.partitions()));
            return rc;
        } finally {
            TrainerHooks.install(null);
        }
    }

    @Command(name = "train-forward", description = {"biflow train-forward, data-parallel: its options follow (biflow train-forward --help);",
            "--batch is the global batch, cut into --partitions shards each step."})
    static final class Forward implements Callable<Integer> {
        @ParentCommand SparkCommand spark;
        @Unmatched List<String> args = new ArrayList<>();

        @Override
        public Integer call() { return run(spark, "train-forward", args); }
    }

    @Command(name = "train-backward", description = {"biflow train-backward, data-parallel: its options follow (biflow train-backward --help);",
            "--batch is the global batch, cut into --partitions shards each step (a barrier stage: all at once)."})
    static final class Backward implements Callable<Integer> {
        @ParentCommand SparkCommand spark;
        @Unmatched List<String> args = new ArrayList<>();

        @Override
        public Integer call() { return run(spark, "train-backward", args); }
    }
}
