"""What the report says, independent of how it is written: the sections, figure captions and
notes that summary.md and index.html both render, so the two never disagree."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# file stem -> (title, one sentence on what it shows); the order is the report's order
FIGURES = {
    "accuracy_vs_round": ("Accuracy by round",
                          "Test accuracy of each method's deployable model per round: mean over seeds, band "
                          "the 95% t-interval with 3 seeds or more, the min-max range with 2 (clipped to "
                          "0-100%); suites compared: one panel per suite."),
    "accuracy_by_family": ("Accuracy by round, by kind of method",
                           "The same accuracy in small multiples, one panel per kind of method (full model, "
                           "width scaling, depth scaling, progressive...: each method's manifest names it), "
                           "the other methods faint grey behind; drawn when the suite holds two kinds or more."),
    "accuracy_vs_time": ("Accuracy by device time",
                         "The same accuracy against cumulative simulated time on the devices: each round "
                         "lasts as long as its slowest participant's compute (FLOPs over the device's "
                         "FLOP/s) and communication (bytes over its link); the FLOP/s and link speeds "
                         "assumed are in the legend (docs/device-time.md)."),
    "device_time_split": ("Compute and communication",
                          "Where a client's simulated round goes, per method: compute (its training FLOPs "
                          "over its device's FLOP/s) and communication (the bytes it receives and sends "
                          "over its links), mean over its trained clients, with communication's share; the "
                          "device time model's FLOP/s and link speeds are in the legend (docs/device-time.md)."),
    "memory_by_method": ("Peak memory by method",
                         "Highest measured tensor peak per method, stacked by category (from the client "
                         "with that peak), dots for each measured client's own peak, and the range of the method's "
                         "task peaks (▸ the smallest: what a device needs to take part at all); beside it "
                         "the share of the fleet (fleets pooled) whose budget is at least each level, with "
                         "each method's smallest task and the share of devices it fits."),
    "participation": ("Participation",
                      "Share of the fleet whose budget covers the task offered to it (fits) and that "
                      "trained and was aggregated (took part), per round, mean over seeds (each seed has "
                      "its own fleet, so no interval is drawn)."),
    "memory_vs_accuracy": ("Memory against accuracy",
                           "Accuracy (mean of each seed's last 10% of evaluated rounds, vertical bar its "
                           "interval over seeds) against the memory a device needs to take part in the method "
                           "(its smallest task's estimated peak; the horizontal bar reaches its largest task), "
                           "every point at its own values and labelled. The dotted front joins the methods "
                           "whose mean no other beats on both, keeping only those whose interval lies above "
                           "the cheaper front method's (a costlier method not shown better is left off). It "
                           "is drawn only when every method within budget is at its plateau: one still moving "
                           "(named '(moving)') could yet beat a front point or fall below it. Hollow: a method "
                           "that ran over its clients' budgets."),
    "neulite_stage_memory": ("NeuLite: memory per stage",
                             "Highest measured tensor peak per NeuLite stage, stacked by category."),
    "neulite_stage_accuracy": ("NeuLite: accuracy per stage",
                               "Accuracy of each model NeuLite evaluates (current stage, full model) by "
                               "round; the strip along the top shows the stage each round trained."),
    "time_to_target": ("Device time to target accuracy",
                       "Simulated device time until the accuracy first reaches the target (mean over the "
                       "seeds that reached it), with the speed-up against FedAvg where every seed of both "
                       "reached it (hatched: ran over budget; pale and crossed: only some seeds reached "
                       "it); not drawn when no method reached it. The device time model's FLOP/s and link "
                       "speeds are in its notes."),
}
SUMMARY_TEXT = (
    "Accuracy is the deployable model's test accuracy, mean over seeds with its interval in brackets: "
    "a 95% Student's t-interval with 3 seeds or more, the min-max range with 2, none with 1 (the "
    "Seeds column says which), clipped to 0-100%. The headline is each seed's mean over its last 10% of "
    "evaluated rounds (at least one), less noisy than its last round, which stands beside it; the change "
    "over the last 20% is the last tenth's mean minus the tenth's before it (mean over seeds): a method "
    "that moved more than 1.5 points is not at its plateau, and a note says so. Against the best compares "
    "each interval with that of the best method within its budgets: 'not separable' where they overlap "
    "(these seeds cannot tell the two apart), 'n/a' without an interval, '(moving)' where this method or "
    "the best is not at its plateau (the verdict holds for this round and may change with more rounds). "
    "Best is each seed's highest round, picked on the test set and so optimistic (compare methods on the "
    "headline). A task's peak is "
    "its estimated training memory (equal to the measured one unless a note says otherwise); the "
    "smallest task is what a device needs to take part at all. Fleet that fits is the share of devices whose budget "
    "covers the task offered to them, over budget the share of trained clients whose measured peak "
    "exceeded their budget: a label marked (over budget) reports accuracy and time no device of "
    "this fleet could reach. Peak measured is the largest measured tensor peak (MB = 2^20 bytes). "
    "Participation is the mean over rounds and seeds of participated/devices. Device time is "
    "simulated time on the devices (docs/device-time.md); speed-up is FedAvg's device time to "
    "target divided by the method's, seed by seed, with its interval over the seeds. Host time is the "
    "simulator's own wall time. Bytes are totals "
    "over rounds, mean over seeds."
)
@dataclass
class Section:
    heading: str
    text: str
    table: pd.DataFrame


@dataclass
class Page:
    title: str
    summary: Section
    notes: list[str]
    figures: list[str]  # stems of the figures rendered, in FIGURES order
    details: list[Section]  # methods, configuration, provenance
