"""The report of a comparison: the tables beside the paper's numbers, Welch's test over the seeds,
the validation curves and the verdict line; it reads run folders and never builds a command."""
