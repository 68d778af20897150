//! Pictures of a workflow: its graph (states as nodes, events as edges, closed states marked)
//! as Mermaid or Graphviz dot, and the path a task took over it (visited edges highlighted,
//! with how many times each was taken).
//!
//! A rule from `any_open` is an edge from every state of the graph that is not closed; a rule
//! to the restored checkpoint's state leads to a node of its own. Names reach the picture as
//! quoted labels with every character outside `A-Z a-z 0-9 _ - @ .` replaced, so a stored name
//! (a legacy database's, say) cannot add syntax to it.

use std::collections::{BTreeMap, BTreeSet};

use aigentflow_core_states::{
    FromStates, StateTransition, Target, WorkflowDefinition, WorkflowState,
};

/// The node the restored checkpoint's state is drawn as.
const CHECKPOINT: &str = "(restored checkpoint)";

/// One edge of the picture.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    event: String,
    to: String,
    guard: Option<String>,
}

/// A definition's graph: its nodes in first-seen order, its edges, its closed states.
struct Graph {
    nodes: Vec<String>,
    edges: Vec<Edge>,
    closed: BTreeSet<String>,
}

fn graph(d: &WorkflowDefinition) -> Graph {
    let mut nodes: Vec<String> = Vec::new();
    let add = |n: &str, nodes: &mut Vec<String>| {
        if !nodes.iter().any(|m| m == n) {
            nodes.push(n.to_owned());
        }
    };
    add(WorkflowState::Idle.as_str(), &mut nodes);
    for rule in d.table.rules() {
        if let FromStates::States(states) = &rule.from {
            for s in states {
                add(s.as_str(), &mut nodes);
            }
        }
        match &rule.to {
            Target::State(s) => add(s.as_str(), &mut nodes),
            Target::CheckpointState => add(CHECKPOINT, &mut nodes),
        }
    }
    let closed: BTreeSet<String> = d.table.closed().map(|s| s.as_str().to_owned()).collect();
    for c in &closed {
        add(c, &mut nodes);
    }
    let mut edges = Vec::new();
    for rule in d.table.rules() {
        let to = match &rule.to {
            Target::State(s) => s.as_str().to_owned(),
            Target::CheckpointState => CHECKPOINT.to_owned(),
        };
        let froms: Vec<String> = match &rule.from {
            FromStates::States(states) => states.iter().map(|s| s.as_str().to_owned()).collect(),
            FromStates::AnyOpen => nodes
                .iter()
                .filter(|n| !closed.contains(*n) && n.as_str() != CHECKPOINT)
                .cloned()
                .collect(),
        };
        for from in froms {
            edges.push(Edge {
                from,
                event: rule.event.as_str().to_owned(),
                to: to.clone(),
                guard: rule.guard.map(|g| g.as_str().to_owned()),
            });
        }
    }
    Graph { nodes, edges, closed }
}

/// `text` with only characters that cannot change a picture's syntax.
fn label(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '.' | ' ' | '(' | ')') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// How many edges a picture made by this module holds: Mermaid's `-->` and `-.->`, dot's `->`.
pub fn edge_count(picture: &str) -> usize {
    picture
        .lines()
        .filter(|l| l.contains("-->") || l.contains("-.->") || l.contains(" -> "))
        .count()
}

/// The definition's graph as a Mermaid flowchart.
pub fn mermaid(d: &WorkflowDefinition) -> String {
    let g = graph(d);
    mermaid_of(&g, &format!("{}@{}", d.name, d.version), &BTreeMap::new(), &[], None)
}

/// The path `history` took over the definition's graph, as a Mermaid flowchart: every edge of
/// the graph, those the task took highlighted and labelled with how many times (a test/fix
/// loop shows its count), a transition the graph lacks drawn dashed, the current state marked.
pub fn task_mermaid(
    d: &WorkflowDefinition,
    history: &[StateTransition],
    current: &WorkflowState,
) -> String {
    let g = graph(d);
    let mut taken: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for t in history {
        *taken
            .entry((
                t.from.as_str().to_owned(),
                t.event.as_str().to_owned(),
                t.to.as_str().to_owned(),
            ))
            .or_default() += 1;
    }
    // What the task took that the graph has no edge for (a restored checkpoint's state, a
    // transition of an older table).
    let extra: Vec<(String, String, String)> = taken
        .keys()
        .filter(|(from, event, to)| {
            !g.edges.iter().any(|e| {
                &e.from == from && &e.event == event && (&e.to == to || e.to == CHECKPOINT)
            })
        })
        .cloned()
        .collect();
    mermaid_of(&g, &format!("{}@{}", d.name, d.version), &taken, &extra, Some(current.as_str()))
}

fn mermaid_of(
    g: &Graph,
    title: &str,
    taken: &BTreeMap<(String, String, String), usize>,
    extra: &[(String, String, String)],
    current: Option<&str>,
) -> String {
    let mut nodes = g.nodes.clone();
    // What the task took that the graph does not draw, and where it is, get nodes of their own.
    let more = extra.iter().flat_map(|(from, _, to)| [from.as_str(), to.as_str()]).chain(current);
    for n in more {
        if !nodes.iter().any(|m| m == n) {
            nodes.push(n.to_owned());
        }
    }
    let id = |n: &str| format!("n{}", nodes.iter().position(|m| m == n).unwrap_or(0));
    let mut out = format!("---\ntitle: {}\n---\nflowchart LR\n", label(title));
    for n in &nodes {
        out.push_str(&format!("    {}[\"{}\"]\n", id(n), label(n)));
    }
    let mut highlighted = Vec::new();
    let mut index = 0;
    for e in &g.edges {
        let times: usize = taken
            .iter()
            .filter(|((from, event, to), _)| {
                from == &e.from && event == &e.event && (to == &e.to || e.to == CHECKPOINT)
            })
            .map(|(_, n)| n)
            .sum();
        let mut text = label(&e.event);
        if let Some(guard) = &e.guard {
            text.push_str(&format!(" [{}]", label(guard)));
        }
        if times > 0 {
            text.push_str(&format!(" x{times}"));
            highlighted.push(index);
        }
        out.push_str(&format!("    {} -->|\"{text}\"| {}\n", id(&e.from), id(&e.to)));
        index += 1;
    }
    for (from, event, to) in extra {
        let times = taken.get(&(from.clone(), event.clone(), to.clone())).copied().unwrap_or(0);
        out.push_str(&format!("    {} -.->|\"{} x{times}\"| {}\n", id(from), label(event), id(to)));
        highlighted.push(index);
        index += 1;
    }
    if !g.closed.is_empty() {
        out.push_str("    classDef closed stroke-width:4px\n");
        let closed: Vec<String> = g.closed.iter().map(|c| id(c)).collect();
        out.push_str(&format!("    class {} closed\n", closed.join(",")));
    }
    if let Some(current) = current {
        out.push_str("    classDef current fill:#fde68a\n");
        out.push_str(&format!("    class {} current\n", id(current)));
    }
    for i in highlighted {
        out.push_str(&format!("    linkStyle {i} stroke:#d33,stroke-width:3px\n"));
    }
    out
}

/// The definition's graph in Graphviz dot.
pub fn dot(d: &WorkflowDefinition) -> String {
    let g = graph(d);
    let id = |n: &str| format!("n{}", g.nodes.iter().position(|m| m == n).unwrap_or(0));
    let mut out = format!("digraph \"{}@{}\" {{\n    rankdir=LR;\n", label(&d.name), d.version);
    for n in &g.nodes {
        let shape = if g.closed.contains(n) { ", peripheries=2" } else { "" };
        out.push_str(&format!("    {} [label=\"{}\"{shape}];\n", id(n), label(n)));
    }
    for e in &g.edges {
        let mut text = label(&e.event);
        if let Some(guard) = &e.guard {
            text.push_str(&format!(" [{}]", label(guard)));
        }
        out.push_str(&format!("    {} -> {} [label=\"{text}\"];\n", id(&e.from), id(&e.to)));
    }
    out.push_str("}\n");
    out
}

/// How many edges the picture of `d` has: one per rule and state it starts from (a rule from
/// `any_open` counts once per open state).
pub fn expected_edges(d: &WorkflowDefinition) -> usize {
    graph(d).edges.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigentflow_core_states::Event;

    fn t(from: WorkflowState, event: Event, to: WorkflowState) -> StateTransition {
        StateTransition { from, to, event, timestamp: chrono::DateTime::UNIX_EPOCH, metadata: None }
    }

    #[test]
    fn the_default_graph_draws_every_rule_and_marks_closed_states() {
        let d = WorkflowDefinition::default_workflow();
        let m = mermaid(d);
        let edges = expected_edges(d);
        assert!(edges > d.table.rules().len(), "any_open rules draw one edge per open state");
        assert_eq!(m.lines().filter(|l| l.contains(" -->|")).count(), edges, "{m}");
        assert!(m.starts_with("---\ntitle: aigentflow-default@1\n---\nflowchart LR\n"), "{m}");
        assert!(m.contains("class ") && m.contains(" closed\n"), "{m}");
        let dot = dot(d);
        assert_eq!(dot.lines().filter(|l| l.contains(" -> ")).count(), edges, "{dot}");
        assert_eq!(dot.matches("peripheries=2").count(), 2, "{dot}");
        assert_eq!(edge_count(&m), edges);
        assert_eq!(edge_count(&dot), edges);
    }

    #[test]
    fn a_task_path_highlights_what_it_took_with_counts() {
        use Event as E;
        use WorkflowState as S;
        let d = WorkflowDefinition::default_workflow();
        let mut history = vec![
            t(S::Idle, E::Start, S::Analyzing),
            t(S::Analyzing, E::AnalysisComplete, S::Orchestrating),
        ];
        for _ in 0..3 {
            history.push(t(S::Testing, E::TestsFailed, S::TestsFail));
            history.push(t(S::TestsFail, E::StartFix, S::Fixing));
            history.push(t(S::Fixing, E::FixComplete, S::Testing));
        }
        history.push(t(S::Testing, E::parse("NOT_IN_GRAPH"), S::parse("ELSEWHERE\"]; evil")));
        let m = task_mermaid(d, &history, &S::parse("ELSEWHERE\"]; evil"));
        assert!(m.contains("|\"TESTS_FAILED x3\"|"), "{m}");
        assert!(m.contains("|\"START x1\"|"), "{m}");
        assert_eq!(m.matches("linkStyle").count(), 6, "{m}");
        assert_eq!(m.matches("-.->").count(), 1, "{m}");
        assert!(!m.contains("\"]; evil") && m.contains("\"ELSEWHERE??? evil\""), "{m}");
        assert_eq!(edge_count(&m), expected_edges(d) + 1);
        // Where the task is, even a state the graph does not draw, is the node marked current.
        let restored = task_mermaid(d, &history[..2], &S::Planning);
        let planning = restored.lines().find(|l| l.contains("[\"PLANNING\"]")).unwrap();
        let id = planning.trim().split('[').next().unwrap();
        assert!(restored.contains(&format!("class {id} current")), "{restored}");
    }
}
