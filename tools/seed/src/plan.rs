//! The demo case files: what each one is, the documents it carries and the
//! moves of its process that leave it in the phase it is shown in. Pure
//! data, checked by the tests at the end against the standard procedure.

/// Key of the procedure every demo file follows.
pub const PROCEDURE: &str = "standard";

/// Every demo file's code starts with this, so one search finds them all.
pub const CODE_PREFIX: &str = "DEMO-";

/// The phase a process starts in.
pub const INITIAL: &str = "initial";

/// The terminal phase: entering it finishes the file.
pub const FINISHED: &str = "finished";

/// The phases of the standard procedure, in the order the screens list them.
pub const PHASES: [&str; 5] = [
    INITIAL,
    "technical_analysis",
    "validation",
    "rejected",
    FINISHED,
];

/// Which demo user acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The `clerk` demo user (tramitador).
    Clerk,
    /// The `validator` demo user, the only one who may finish a file.
    Validator,
}

/// What a demo document holds; the bytes are made by [`crate::content`].
#[derive(Debug, Clone, Copy)]
pub enum Content {
    /// A one-page PDF letter: a title, then paragraphs.
    Pdf {
        /// Its heading.
        title: &'static str,
        /// Its paragraphs, wrapped to the page.
        paragraphs: &'static [&'static str],
    },
    /// A PNG floor plan of the premises (a drawing of rooms on a grid).
    FloorPlan,
}

/// A document of a demo file.
#[derive(Debug, Clone, Copy)]
pub struct DemoDocument {
    /// Its file name, as the documents table shows it.
    pub name: &'static str,
    /// What it holds.
    pub content: Content,
}

/// A document added to a demo file after it became active.
#[derive(Debug, Clone, Copy)]
pub struct LaterDocument {
    /// How many of the file's moves come before it (0: right after the
    /// file became active). Less than the number of moves of a file that
    /// finishes, whose documents are read-only then.
    pub after_moves: usize,
    /// The document.
    pub document: DemoDocument,
}

/// One transition of a demo file's process.
#[derive(Debug, Clone, Copy)]
pub struct Move {
    /// The phase it enters.
    pub to: &'static str,
    /// Who takes it.
    pub by: Actor,
    /// The comment recorded with it.
    pub comment: &'static str,
}

/// A demo case file.
#[derive(Debug, Clone, Copy)]
pub struct DemoFile {
    /// Its code, fixed so that a second run finds it.
    pub code: &'static str,
    /// The channel it came in through (one of the default initial options).
    pub initial_option: &'static str,
    /// Its description.
    pub description: &'static str,
    /// Who opens it (and adds its documents).
    pub opened_by: Actor,
    /// The document it is created with.
    pub first_document: DemoDocument,
    /// A document added once it is active, after some of its moves.
    pub second_document: Option<LaterDocument>,
    /// The moves of its process, in order, from "Fase inicial".
    pub moves: &'static [Move],
}

impl DemoFile {
    /// Its documents, the first one first.
    pub fn documents(&self) -> impl Iterator<Item = &DemoDocument> {
        std::iter::once(&self.first_document)
            .chain(self.second_document.as_ref().map(|l| &l.document))
    }

    /// The phase it is left in.
    pub fn target_phase(&self) -> &'static str {
        self.moves.last().map_or(INITIAL, |m| m.to)
    }

    /// Whether it ends finished.
    pub fn finishes(&self) -> bool {
        self.target_phase() == FINISHED
    }

    /// Whether its process goes through "Fase rechazado" and then on.
    pub fn loops_through_rejection(&self) -> bool {
        self.moves
            .iter()
            .position(|m| m.to == "rejected")
            .is_some_and(|at| at + 1 < self.moves.len())
    }
}

const SEDE: &str = "Sede electrónica";
const DEPARTAMENTO: &str = "A petición departamento";

/// The closing line of every demo letter.
pub const FOOTER: &str = "Documento de demostración generado por tramita-seed para un entorno de desarrollo. Los datos personales son ficticios.";

const TO_ANALYSIS: Move = Move {
    to: "technical_analysis",
    by: Actor::Clerk,
    comment: "Solicitud completa: se remite a los servicios técnicos para su informe.",
};
const TO_VALIDATION: Move = Move {
    to: "validation",
    by: Actor::Clerk,
    comment: "Informe técnico favorable; se eleva a validación.",
};

/// The twelve demo files, spread over every phase of the standard
/// procedure: three in "Fase inicial", three in "Fase de análisis
/// técnico" (one of them back from the rejection loop), two in "Fase de
/// validación", two in "Fase rechazado" and two "Finalizado" (one of them
/// after the rejection loop).
pub const DEMO_FILES: [DemoFile; 12] = [
    DemoFile {
        code: "DEMO-001",
        initial_option: SEDE,
        description: "Licencia de obra menor en C/ Mayor 12, 2.º B: reforma de cocina y baño sin afectar a la estructura",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_licencia_obra_menor.pdf",
            content: Content::Pdf {
                title: "Solicitud de licencia de obra menor",
                paragraphs: &[
                    "Solicitante: Lucía Fernández Ortega, con domicilio en C/ Mayor 12, 2.º B, 41001 Villanueva del Río.",
                    "Expone: que desea realizar obras de reforma interior de cocina y baño en la vivienda indicada, consistentes en la sustitución de alicatados, sanitarios e instalación de fontanería, sin modificar elementos estructurales ni la distribución.",
                    "Solicita: que se le conceda la licencia de obra menor para las obras descritas, con un presupuesto de ejecución material de 8.450,00 euros.",
                ],
            },
        },
        second_document: Some(LaterDocument { after_moves: 0, document: DemoDocument {
            name: "presupuesto_reforma.pdf",
            content: Content::Pdf {
                title: "Presupuesto de reforma de cocina y baño",
                paragraphs: &[
                    "Reformas Guadalquivir, S.L. (CIF B00000000). Presupuesto n.º 2026-0147.",
                    "Demolición de alicatados y retirada de escombros: 1.200,00 euros. Fontanería y saneamiento: 2.350,00 euros. Alicatado y solado: 2.900,00 euros. Sanitarios y grifería: 2.000,00 euros.",
                    "Total presupuesto de ejecución material: 8.450,00 euros (IVA no incluido).",
                ],
            },
        } }),
        moves: &[],
    },
    DemoFile {
        code: "DEMO-002",
        initial_option: SEDE,
        description: "Solicitud de subvención para la rehabilitación de la fachada del edificio de Plaza de España 3",
        opened_by: Actor::Validator,
        first_document: DemoDocument {
            name: "solicitud_subvencion_fachada.pdf",
            content: Content::Pdf {
                title: "Solicitud de subvención: rehabilitación de fachadas",
                paragraphs: &[
                    "Solicitante: Comunidad de Propietarios Plaza de España 3, representada por su presidente, Antonio Ruiz Delgado.",
                    "Convocatoria: ayudas municipales a la rehabilitación de fachadas del casco histórico, ejercicio 2026.",
                    "Importe solicitado: 12.000,00 euros sobre un presupuesto subvencionable de 30.000,00 euros.",
                ],
            },
        },
        second_document: None,
        moves: &[],
    },
    DemoFile {
        code: "DEMO-003",
        initial_option: DEPARTAMENTO,
        description: "Informe sobre el estado del arbolado del Parque de la Alameda, a petición de la Concejalía de Medio Ambiente",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "peticion_concejalia_medio_ambiente.pdf",
            content: Content::Pdf {
                title: "Petición de informe: arbolado del Parque de la Alameda",
                paragraphs: &[
                    "La Concejalía de Medio Ambiente solicita un informe sobre el estado fitosanitario del arbolado del Parque de la Alameda tras las tormentas del pasado mes.",
                    "Se ruega que el informe identifique los ejemplares con riesgo de caída y proponga las actuaciones necesarias.",
                ],
            },
        },
        second_document: None,
        moves: &[],
    },
    DemoFile {
        code: "DEMO-004",
        initial_option: SEDE,
        description: "Licencia de apertura de cafetería en Av. de la Constitución 45, local 2",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_licencia_apertura.pdf",
            content: Content::Pdf {
                title: "Solicitud de licencia de apertura",
                paragraphs: &[
                    "Solicitante: Café La Giralda, S.L., representada por Marta Gómez Pardo.",
                    "Actividad: cafetería sin cocina, con un aforo de 40 personas, en Av. de la Constitución 45, local 2.",
                    "Se acompaña el plano del local con la distribución y las salidas de evacuación.",
                ],
            },
        },
        second_document: Some(LaterDocument { after_moves: 0, document: DemoDocument {
            name: "plano_local.png",
            content: Content::FloorPlan,
        } }),
        moves: &[TO_ANALYSIS],
    },
    DemoFile {
        code: "DEMO-005",
        initial_option: SEDE,
        description: "Ocupación de la vía pública con terraza de veladores en C/ Real 8 (6 mesas)",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_terraza.pdf",
            content: Content::Pdf {
                title: "Solicitud de ocupación de vía pública con terraza",
                paragraphs: &[
                    "Solicitante: Bar El Rincón, titular: José Manuel Vega Romero.",
                    "Se solicita autorización para instalar 6 mesas y 24 sillas en la acera de C/ Real 8, de marzo a octubre, en horario de 9:00 a 24:00.",
                ],
            },
        },
        second_document: None,
        moves: &[TO_ANALYSIS],
    },
    DemoFile {
        code: "DEMO-006",
        initial_option: SEDE,
        description: "Licencia de primera ocupación de vivienda unifamiliar en C/ Olivo 7",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_primera_ocupacion.pdf",
            content: Content::Pdf {
                title: "Solicitud de licencia de primera ocupación",
                paragraphs: &[
                    "Solicitante: Carmen Jiménez Soto.",
                    "Se solicita la licencia de primera ocupación de la vivienda unifamiliar de C/ Olivo 7, construida al amparo de la licencia de obra mayor 2025/000311.",
                ],
            },
        },
        second_document: Some(LaterDocument { after_moves: 2, document: DemoDocument {
            name: "certificado_final_obra.pdf",
            content: Content::Pdf {
                title: "Certificado final de obra",
                paragraphs: &[
                    "La dirección facultativa certifica que la obra de vivienda unifamiliar en C/ Olivo 7 ha sido terminada según el proyecto aprobado y sus modificaciones.",
                    "Aportado para subsanar el requerimiento de documentación.",
                ],
            },
        } }),
        moves: &[
            TO_ANALYSIS,
            Move {
                to: "rejected",
                by: Actor::Clerk,
                comment: "Falta el certificado final de obra: se requiere al interesado que subsane en diez días (art. 68 Ley 39/2015).",
            },
            Move {
                to: INITIAL,
                by: Actor::Clerk,
                comment: "La interesada aporta el certificado final de obra.",
            },
            TO_ANALYSIS,
        ],
    },
    DemoFile {
        code: "DEMO-007",
        initial_option: SEDE,
        description: "Cambio de titularidad de la licencia de actividad de la farmacia de C/ San Juan 14",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "comunicacion_cambio_titularidad.pdf",
            content: Content::Pdf {
                title: "Comunicación de cambio de titularidad",
                paragraphs: &[
                    "Titular anterior: Rafael Morales Núñez. Nuevo titular: Elena Morales Castro.",
                    "Actividad: oficina de farmacia en C/ San Juan 14, sin modificación de las instalaciones ni de la actividad.",
                ],
            },
        },
        second_document: None,
        moves: &[TO_ANALYSIS, TO_VALIDATION],
    },
    DemoFile {
        code: "DEMO-008",
        initial_option: DEPARTAMENTO,
        description: "Contrato menor de mantenimiento de las fuentes ornamentales, a petición del Área de Parques y Jardines",
        opened_by: Actor::Validator,
        first_document: DemoDocument {
            name: "memoria_justificativa.pdf",
            content: Content::Pdf {
                title: "Memoria justificativa del contrato menor",
                paragraphs: &[
                    "Objeto: mantenimiento preventivo y correctivo de las siete fuentes ornamentales del municipio durante doce meses.",
                    "Valor estimado: 9.800,00 euros, IVA excluido. Se justifica que no se altera el objeto del contrato para evitar las reglas generales de contratación.",
                ],
            },
        },
        second_document: Some(LaterDocument { after_moves: 1, document: DemoDocument {
            name: "informe_tecnico_fuentes.pdf",
            content: Content::Pdf {
                title: "Informe técnico",
                paragraphs: &[
                    "El técnico municipal informa favorablemente la necesidad del contrato y el presupuesto presentado por la empresa propuesta.",
                ],
            },
        } }),
        moves: &[TO_ANALYSIS, TO_VALIDATION],
    },
    DemoFile {
        code: "DEMO-009",
        initial_option: SEDE,
        description: "Solicitud de vado permanente para cochera en C/ Ancha 22",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_vado.pdf",
            content: Content::Pdf {
                title: "Solicitud de vado permanente",
                paragraphs: &[
                    "Solicitante: Francisco Javier López Marín.",
                    "Se solicita la autorización de vado permanente para la cochera de C/ Ancha 22, con una anchura de acceso de 3 metros.",
                ],
            },
        },
        second_document: None,
        moves: &[
            TO_ANALYSIS,
            Move {
                to: "rejected",
                by: Actor::Clerk,
                comment: "Falta el plano de situación del acceso: se requiere al interesado que subsane (art. 68 Ley 39/2015).",
            },
        ],
    },
    DemoFile {
        code: "DEMO-010",
        initial_option: SEDE,
        description: "Subvención para las actividades culturales de 2026 de la Asociación Vecinal El Carmen",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_subvencion_cultura.pdf",
            content: Content::Pdf {
                title: "Solicitud de subvención para actividades culturales",
                paragraphs: &[
                    "Entidad: Asociación Vecinal El Carmen, inscrita en el registro municipal de asociaciones con el n.º 118.",
                    "Importe solicitado: 3.500,00 euros para el ciclo de cine de verano y los talleres de teatro.",
                ],
            },
        },
        second_document: Some(LaterDocument { after_moves: 0, document: DemoDocument {
            name: "memoria_actividades.pdf",
            content: Content::Pdf {
                title: "Memoria de actividades 2026",
                paragraphs: &[
                    "Ciclo de cine de verano: ocho sesiones al aire libre en la plaza del barrio, de julio a agosto.",
                    "Talleres de teatro para jóvenes: dos grupos semanales de octubre a diciembre.",
                ],
            },
        } }),
        moves: &[
            TO_ANALYSIS,
            TO_VALIDATION,
            Move {
                to: "rejected",
                by: Actor::Validator,
                comment: "La memoria no desglosa el presupuesto por actividad: se requiere subsanación.",
            },
        ],
    },
    DemoFile {
        code: "DEMO-011",
        initial_option: SEDE,
        description: "Autorización de tala de un pino con riesgo de caída en la parcela de Urbanización Los Pinos 14",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_tala.pdf",
            content: Content::Pdf {
                title: "Solicitud de autorización de tala",
                paragraphs: &[
                    "Solicitante: Manuel Ortiz Reyes.",
                    "Se solicita autorización para talar un pino piñonero de unos 14 metros, inclinado hacia la vivienda colindante tras el último temporal.",
                ],
            },
        },
        second_document: None,
        moves: &[
            TO_ANALYSIS,
            TO_VALIDATION,
            Move {
                to: FINISHED,
                by: Actor::Validator,
                comment: "Validado: se autoriza la tala con la obligación de reponer dos ejemplares. Se notifica al interesado.",
            },
        ],
    },
    DemoFile {
        code: "DEMO-012",
        initial_option: SEDE,
        description: "Licencia de actividad para taller de reparación de vehículos en el Polígono Industrial Sur, nave 9",
        opened_by: Actor::Clerk,
        first_document: DemoDocument {
            name: "solicitud_licencia_actividad.pdf",
            content: Content::Pdf {
                title: "Solicitud de licencia de actividad",
                paragraphs: &[
                    "Solicitante: Talleres Hermanos Sánchez, S.C.",
                    "Actividad: taller de reparación de vehículos (mecánica y electricidad) en el Polígono Industrial Sur, nave 9, con una superficie de 420 metros cuadrados.",
                ],
            },
        },
        second_document: Some(LaterDocument { after_moves: 0, document: DemoDocument {
            name: "proyecto_tecnico_actividad.pdf",
            content: Content::Pdf {
                title: "Proyecto técnico de la actividad",
                paragraphs: &[
                    "Memoria descriptiva de la actividad, instalaciones de ventilación y extracción de gases, y medidas de protección contra incendios.",
                    "Incluye la gestión de residuos peligrosos (aceites usados y baterías) mediante gestor autorizado.",
                ],
            },
        } }),
        moves: &[
            TO_ANALYSIS,
            TO_VALIDATION,
            Move {
                to: "rejected",
                by: Actor::Validator,
                comment: "El proyecto no justifica la ventilación del foso de inspección: se requiere subsanación.",
            },
            Move {
                to: INITIAL,
                by: Actor::Clerk,
                comment: "El interesado aporta el anexo de ventilación al proyecto técnico.",
            },
            TO_ANALYSIS,
            TO_VALIDATION,
            Move {
                to: FINISHED,
                by: Actor::Validator,
                comment: "Validado: se concede la licencia de actividad. Se notifica al interesado.",
            },
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard procedure's transitions and who may take them.
    const STANDARD: [(&str, &str, &[Actor]); 6] = [
        (
            INITIAL,
            "technical_analysis",
            &[Actor::Clerk, Actor::Validator],
        ),
        (
            "technical_analysis",
            "validation",
            &[Actor::Clerk, Actor::Validator],
        ),
        (
            "technical_analysis",
            "rejected",
            &[Actor::Clerk, Actor::Validator],
        ),
        ("validation", FINISHED, &[Actor::Validator]),
        ("validation", "rejected", &[Actor::Clerk, Actor::Validator]),
        ("rejected", INITIAL, &[Actor::Clerk, Actor::Validator]),
    ];

    #[test]
    fn every_demo_file_moves_only_along_the_standard_procedure_by_someone_allowed() {
        for file in &DEMO_FILES {
            let mut at = INITIAL;
            for step in file.moves {
                let allowed = STANDARD
                    .iter()
                    .find(|(from, to, _)| *from == at && *to == step.to)
                    .unwrap_or_else(|| panic!("{}: no transition {at} -> {}", file.code, step.to));
                assert!(
                    allowed.2.contains(&step.by),
                    "{}: {:?} may not enter {}",
                    file.code,
                    step.by,
                    step.to
                );
                assert!(!step.comment.trim().is_empty());
                at = step.to;
            }
        }
    }

    #[test]
    fn the_demo_files_occupy_every_phase_with_a_rejection_loop_and_a_finished_one() {
        assert_eq!(DEMO_FILES.len(), 12);
        for phase in PHASES {
            assert!(
                DEMO_FILES.iter().any(|f| f.target_phase() == phase),
                "no demo file in {phase}"
            );
        }
        assert!(DEMO_FILES.iter().any(DemoFile::finishes));
        assert!(DEMO_FILES
            .iter()
            .any(|f| f.finishes() && f.loops_through_rejection()));
        assert!(DEMO_FILES
            .iter()
            .any(|f| !f.finishes() && f.loops_through_rejection()));
        assert!(DEMO_FILES.iter().any(|f| f.opened_by == Actor::Validator));
        assert!(DEMO_FILES.iter().any(|f| f.initial_option == DEPARTAMENTO));
    }

    #[test]
    fn demo_codes_are_unique_valid_file_codes_with_the_demo_prefix() {
        for (n, file) in DEMO_FILES.iter().enumerate() {
            assert!(file.code.starts_with(CODE_PREFIX), "{}", file.code);
            // The files service's rule: 1 to 40 letters, digits and / - _ .
            assert!(file.code.len() <= 40);
            assert!(file
                .code
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '/' | '-' | '_' | '.')));
            assert!(DEMO_FILES[n + 1..]
                .iter()
                .all(|other| other.code != file.code));
        }
    }

    #[test]
    fn each_demo_file_has_one_or_two_distinctly_named_documents_and_a_short_description() {
        for file in &DEMO_FILES {
            let names: Vec<&str> = file.documents().map(|d| d.name).collect();
            assert!((1..=2).contains(&names.len()), "{}", file.code);
            assert!(names.len() == 1 || names[0] != names[1], "{}", file.code);
            if let Some(later) = &file.second_document {
                assert!(later.after_moves <= file.moves.len(), "{}", file.code);
                if file.finishes() {
                    assert!(
                        later.after_moves < file.moves.len(),
                        "{}: read-only by then",
                        file.code
                    );
                }
            }
            assert!(file.description.chars().count() <= 2000);
            assert!(!file.description.chars().any(char::is_control));
        }
    }
}
