// The main class of the shaded jar under spark-submit: `spark-submit ... biflow-spark-all.jar sample ...` is `biflow spark sample ...`.
package dev.biflow.spark;

/** spark-submit sets the master (spark.master); the arguments are those of a {@code biflow spark} command. */
public final class SparkMain {
    private SparkMain() {}

    public static void main(String[] args) {
        String[] all = new String[args.length + 1];
        all[0] = "spark";
        System.arraycopy(args, 0, all, 1, args.length);
        System.exit(dev.biflow.cli.Main.execute(all));
    }
}
