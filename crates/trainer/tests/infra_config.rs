//! Config: fastai defaults, a full config, partial tables, unknown keys and bad values.

use std::path::Path;

use ulmfit_trainer::config::*;
use ulmfit_trainer::schedule::{fastai_classifier_recipe, Schedule};

const FULL: &str = r#"
[data]
root = "/data"
lm_train = "ptb/ptb.train.txt"
lm_valid = "ptb/ptb.valid.txt"
task = "csv"
task_path = "sst2/train.tsv"
test_path = "sst2/dev.tsv"
text_col = "sentence"
label_col = "label"
delimiter = "\t"
trec_fine = true
valid_pct = 0.2

[model]
emb_sz = 200
n_hid = 576
n_layers = 2
lm_drop_mult = 0.3
clas_drop_mult = 0.5
max_vocab = 30000
min_freq = 2

[model.lm_dropouts]
input_p = 0.3

[model.clas_dropouts]
input_p = 0.4
hidden_p = 0.3
weight_p = 0.5
embed_p = 0.05
output_p = 0.4

[optim]
sqr_mom = 0.99
eps = 1e-5
ar_alpha = 2.0
tar_beta = 1.0
moms = [0.95, 0.85, 0.95]
pct_start = 0.3
div = 25.0
div_final = 1e5
cut_frac = 0.1
ratio = 32.0

[pretrain]
epochs = 3
bs = 32
bptt = 70
lr = 5e-3
wd = 0.01
clip = 0.25
schedule = "stlr"

[finetune_lm]
frozen_epochs = 1
frozen_lr = 2e-2
epochs = 4
lr = 2e-3
bs = 32
bptt = 70
wd = 0.1
clip = 0.1
schedule = "one-cycle"
text = "all"

[classifier]
bs = 32
bptt = 70
max_len = 1400
lin_ftrs = 50
head_p = 0.1
lr = 1e-2
wd = 0.01
clip = 0.0
schedule = "one-cycle"

[[classifier.stages]]
freeze_to = -1
epochs = 2
lr = 2e-2
lr_div = 1.0

[[classifier.stages]]
freeze_to = 0
epochs = 3
lr = 1e-3

[run]
seed = 7
device = "cuda"
out_dir = "runs/sst2"
backwards = true
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("configs/test.toml"))
}

#[test]
fn empty_config_is_fastai_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(
        (c.model.emb_sz, c.model.n_hid, c.model.n_layers, c.model.max_vocab, c.model.min_freq),
        (400, 1152, 3, 60000, 3)
    );
    assert_eq!(
        c.model.lm_dropouts,
        Dropouts { input_p: 0.25, hidden_p: 0.15, weight_p: 0.2, embed_p: 0.02, output_p: 0.1 }
    );
    assert_eq!(
        c.model.clas_dropouts.scaled(c.model.clas_drop_mult),
        Dropouts { input_p: 0.2, hidden_p: 0.15, weight_p: 0.25, embed_p: 0.025, output_p: 0.2 }
    );
    assert_eq!((c.classifier.bptt, c.classifier.max_len, c.classifier.lin_ftrs), (72, 1440, 50));
    assert_eq!(c.classifier.freeze_stages(), fastai_classifier_recipe(2e-2));
    assert_eq!(c.data.task, TaskKind::Trec);
    match c.optim.schedule(c.pretrain.schedule) {
        Schedule::OneCycle(oc) => {
            assert_eq!((oc.div, oc.div_final, oc.pct_start, oc.moms), (25.0, 1e5, 0.25, (0.8, 0.7, 0.8)))
        }
        s => panic!("default schedule is {s:?}"),
    }
}

#[test]
fn full_config_parses_and_round_trips() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.data.resolve(Path::new("trec")), Path::new("/data/trec"));
    assert_eq!(c.data.resolve(Path::new("/abs/x")), Path::new("/abs/x"));
    assert_eq!((c.data.task, c.data.delimiter.as_str(), c.data.valid_pct), (TaskKind::Csv, "\t", 0.2));
    // A partial dropout table keeps the other LM defaults.
    assert_eq!(c.model.lm_dropouts, Dropouts { input_p: 0.3, ..Dropouts::lm() });
    assert_eq!(
        (c.pretrain.schedule, c.pretrain.clip, c.run.device, c.run.seed),
        (ScheduleKind::Stlr, 0.25, DeviceKind::Cuda, 7)
    );
    assert_eq!((c.finetune_lm.text, Config::default().finetune_lm.text), (LmText::All, LmText::Train));
    assert_eq!(c.optim.schedule(ScheduleKind::Stlr), Schedule::Slanted { cut_frac: 0.1, ratio: 32.0 });
    let stages = c.classifier.freeze_stages();
    assert_eq!(stages.len(), 2);
    assert_eq!((stages[0].trainable_groups_from_top, stages[0].epochs, stages[0].lr_div), (1, 2, 1.0));
    assert_eq!((stages[1].trainable_groups_from_top, stages[1].lr_max), (usize::MAX, 1e-3));
    assert!((stages[1].lr_div - 45.6976).abs() < 1e-4, "default lr_div {}", stages[1].lr_div);
    let again = parse(&c.to_toml()).unwrap();
    assert_eq!(again, c, "to_toml does not round-trip:\n{}", c.to_toml());
    // Without stages, the recipe follows classifier.lr.
    let c = parse("[classifier]\nlr = 1e-2\n").unwrap();
    assert_eq!(c.classifier.freeze_stages(), fastai_classifier_recipe(1e-2));
}

#[test]
fn unknown_keys_name_key_table_and_file() {
    let e = parse("[model]\nemb_sz = 400\nemb_size = 300\n").unwrap_err().to_string();
    for needle in ["configs/test.toml", "emb_size", "table [model]", "line 3"] {
        assert!(e.contains(needle), "error lacks {needle:?}:\n{e}");
    }
    let e = parse("[model.lm_dropouts]\ninput = 0.1\n").unwrap_err().to_string();
    assert!(e.contains("input") && e.contains("[model.lm_dropouts]"), "{e}");
    let e = parse("[trainer]\nx = 1\n").unwrap_err().to_string();
    assert!(e.contains("trainer") && e.contains("top level"), "{e}");
    let e = parse("[data]\ntask = \"yelp\"\n").unwrap_err().to_string();
    assert!(e.contains("yelp") && e.contains("trec"), "{e}");
    let e = parse("[pretrain]\nepochs = \"ten\"\n").unwrap_err().to_string();
    assert!(e.contains("epochs") || e.contains("line 2"), "{e}");
    let e = Config::load(Path::new("/nonexistent/ulmfit.toml")).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ulmfit.toml"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let bad = [
        ("[model.clas_dropouts]\nweight_p = 1.0\n", "model.clas_dropouts.weight_p = 1: a dropout must be in [0, 1)"),
        ("[model]\nlm_drop_mult = 5.0\n", "model.lm_dropouts.input_p = 0.25 (x drop_mult 5 = 1.25)"),
        ("[model]\nn_hid = 0\n", "model.n_hid = 0: must be positive"),
        ("[pretrain]\nlr = -1e-3\n", "pretrain.lr = -0.001: a learning rate must be positive"),
        ("[optim]\nmoms = [0.8, 1.2, 0.8]\n", "optim.moms[1] = 1.2"),
        (
            "[classifier]\nbptt = 72\nmax_len = 142\n",
            "classifier.max_len = 142: must be at least 2 x classifier.bptt - 1",
        ),
        ("[classifier]\nbs = 1\n", "classifier.bs = 1: must be at least 2"),
        ("[[classifier.stages]]\nfreeze_to = 2\nepochs = 1\nlr = 1e-3\n", "classifier.stages[0].freeze_to = 2"),
        ("[classifier]\nstages = []\n", "classifier.stages = []"),
        ("[data]\ndelimiter = \",,\"\n", "data.delimiter = \",,\": must be one character"),
    ];
    for (text, want) in bad {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("configs/test.toml"), "for {text:?} expected {want:?} in:\n{e}");
    }
    // All problems are reported at once.
    let e = parse("[model]\nn_hid = 0\nemb_sz = 0\n").unwrap_err().to_string();
    assert!(e.contains("model.n_hid") && e.contains("model.emb_sz"), "{e}");
}
